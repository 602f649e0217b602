package cli

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// conn holds the connection flags shared by every server command.
type conn struct {
	addr, token, cacert string
}

func (c *conn) flags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&c.addr, "addr", "", "server URL (env COFFER_ADDR, default https://127.0.0.1:7443)")
	f.StringVar(&c.token, "token", "", "bearer token (env COFFER_TOKEN)")
	f.StringVar(&c.cacert, "cacert", "", "CA certificate to trust, e.g. <data-dir>/ca.pem (env COFFER_CACERT)")
}

// client is a small JSON client of the server's REST API.
type client struct {
	base  string
	token string
	http  *http.Client
}

func (c *conn) client() (*client, error) {
	addr := first(c.addr, os.Getenv("COFFER_ADDR"), "https://127.0.0.1:7443")
	if !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, usageError(fmt.Errorf("--addr %q: want https://host:port", addr))
	}
	tok := strings.TrimSpace(first(c.token, os.Getenv("COFFER_TOKEN")))
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if ca := first(c.cacert, os.Getenv("COFFER_CACERT")); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA certificate %s: no PEM certificate in it", ca)
		}
		tlsCfg.RootCAs = pool
	}
	return &client{
		base:  strings.TrimSuffix(u.String(), "/"),
		token: tok,
		http:  &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true}},
	}, nil
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// apiError is an error answered by the server.
type apiError struct {
	Status int
	Msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Msg, e.Status) }

// do sends a request with an optional JSON body and decodes a JSON answer into out.
func (c *client) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return err
	}
	if c.token == "" {
		return usageError(errors.New("no token: set --token or COFFER_TOKEN (the first admin token is in <data-dir>/admin.token)"))
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the server: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return &apiError{Status: resp.StatusCode, Msg: e.Error}
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}

// escapePath escapes each element of a slash-separated name.
func escapePath(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// deleteCmd builds a command that sends DELETE <pathPrefix><arg> and prints
// done (a format with the argument).
func deleteCmd(c *conn, use, short, example, pathPrefix, done string) *cobra.Command {
	return &cobra.Command{
		Use:     use,
		Short:   short,
		Example: example,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			if err := cl.do("DELETE", pathPrefix+escapePath(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), done, args[0])
			return nil
		},
	}
}

// get checks the -o flag, then GETs path into out.
func (c *conn) get(o *output, path string, out any) error {
	if err := o.check(); err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	return cl.do("GET", path, nil, out)
}
