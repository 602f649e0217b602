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

// defaultAddr is the server a command talks to when nothing says otherwise.
const defaultAddr = "https://127.0.0.1:7443"

// conn holds the connection flags shared by every server command, and what
// the server answered during the command's run.
type conn struct {
	addr, token, tokenFile, cacert, context string

	errOut  io.Writer // warnings
	quiet   bool      // no warnings (shell completion)
	timeout time.Duration
	warned  map[string]bool

	answers answers
}

func (c *conn) flags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&c.addr, "addr", "", "server URL https://host:port, or host:port; alias --server (env COFFER_ADDR, default "+defaultAddr+")")
	f.StringVar(&c.cacert, "cacert", "", "CA certificate to trust, e.g. <data-dir>/ca.pem; alias --ca-cert (env COFFER_CACERT)")
	f.StringVar(&c.tokenFile, "token-file", "", "read the bearer token from this file (env COFFER_TOKEN_FILE)")
	f.StringVar(&c.token, "token", "", "bearer token (env COFFER_TOKEN); prefer --token-file: arguments are visible in ps and shell history")
	f.StringVar(&c.context, "context", "", "use this context of the config file (env COFFER_CONTEXT; default: its current-context)")
	_ = cmd.RegisterFlagCompletionFunc("context", completeContexts)
}

// warn prints a warning on stderr, once per text.
func (c *conn) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if c.quiet || c.errOut == nil || c.warned[msg] {
		return
	}
	if c.warned == nil {
		c.warned = map[string]bool{}
	}
	c.warned[msg] = true
	fmt.Fprintln(c.errOut, "coffer: warning:", msg)
}

// target is where and how to connect, and where each part came from.
type target struct {
	addr, addrFrom     string
	cacert, cacertFrom string
	token, tokenFrom   string
	context            string // the config context used, if any
}

// resolve picks each setting from the flags, else the environment, else
// the config file's context.
func (c *conn) resolve() (target, error) {
	var t target
	ctx, err := c.selectContext()
	if err != nil {
		return t, err
	}
	fromCtx := ""
	if ctx != nil {
		t.context = ctx.Name
		fromCtx = fmt.Sprintf("context %q", ctx.Name)
	}
	pick := func(vals ...[2]string) (string, string) {
		for _, v := range vals {
			if v[0] != "" {
				return v[0], v[1]
			}
		}
		return "", ""
	}
	var cx Context
	if ctx != nil {
		cx = *ctx
	}
	t.addr, t.addrFrom = pick([2]string{c.addr, "--addr"}, [2]string{os.Getenv("COFFER_ADDR"), "COFFER_ADDR"}, [2]string{cx.Addr, fromCtx}, [2]string{defaultAddr, "the default"})
	t.cacert, t.cacertFrom = pick([2]string{c.cacert, "--cacert"}, [2]string{os.Getenv("COFFER_CACERT"), "COFFER_CACERT"}, [2]string{cx.CACert, fromCtx})
	if c.token != "" && c.tokenFile != "" {
		return t, usageError(errors.New("--token and --token-file exclude each other"))
	}
	switch {
	case c.token != "":
		t.token, t.tokenFrom = strings.TrimSpace(c.token), "--token"
	case c.tokenFile != "":
		t.token, err = c.readTokenFile(c.tokenFile, "--token-file")
		t.tokenFrom = "--token-file " + c.tokenFile
	case os.Getenv("COFFER_TOKEN") != "":
		t.token, t.tokenFrom = strings.TrimSpace(os.Getenv("COFFER_TOKEN")), "COFFER_TOKEN"
	case os.Getenv("COFFER_TOKEN_FILE") != "":
		f := os.Getenv("COFFER_TOKEN_FILE")
		t.token, err = c.readTokenFile(f, "COFFER_TOKEN_FILE")
		t.tokenFrom = "COFFER_TOKEN_FILE " + f
	case c.loginSession(&t):
	case cx.Token != "":
		t.token, t.tokenFrom = strings.TrimSpace(cx.Token), fromCtx
	case cx.TokenFile != "":
		t.token, err = c.readTokenFile(cx.TokenFile, fromCtx+" token-file")
		t.tokenFrom = fromCtx + " token-file " + cx.TokenFile
	}
	return t, err
}

// readTokenFile reads a token from path; it warns if others may read it.
func (c *conn) readTokenFile(path, from string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", usageError(fmt.Errorf("%s: %w", from, err))
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		c.warn("token file %s has mode %04o: others on this machine may read it; chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	// Lines after the first that start with '#' are comments (a login
	// session file names its server and user in them).
	tok, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n#")
	tok = strings.TrimSpace(tok)
	clear(b)
	if tok == "" {
		return "", usageError(fmt.Errorf("%s: %s is empty", from, path))
	}
	return tok, nil
}

// client is a small JSON client of the server's REST API.
type client struct {
	base   string
	token  string
	target target
	http   *http.Client
	rec    *answers
}

// parseAddr turns --addr/--server into a base URL: https://host:port, or
// host:port (https is implied).
func parseAddr(addr string) (*url.URL, error) {
	if !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("%q: want https://host:port or host:port", addr)
	}
	return u, nil
}

func (c *conn) client() (*client, error) {
	t, err := c.resolve()
	if err != nil {
		return nil, err
	}
	u, err := parseAddr(t.addr)
	if err != nil {
		return nil, usageError(fmt.Errorf("server address from %s: %w", t.addrFrom, err))
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if t.cacert != "" {
		pem, err := os.ReadFile(t.cacert)
		if err != nil {
			return nil, usageError(fmt.Errorf("CA certificate from %s: %w", t.cacertFrom, err))
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usageError(fmt.Errorf("CA certificate %s (from %s): no PEM certificate in it", t.cacert, t.cacertFrom))
		}
		tlsCfg.RootCAs = pool
	}
	timeout := c.timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	return &client{
		base:   strings.TrimSuffix(u.String(), "/"),
		token:  t.token,
		target: t,
		http:   &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true}},
		rec:    &c.answers,
	}, nil
}

// unreachable is an error of the transport: no answer from the server.
func (c *client) unreachable(err error) error {
	where := c.base
	if c.target.addrFrom != "" {
		where += " (from " + c.target.addrFrom + ")"
	}
	msg := fmt.Sprintf("cannot reach the server at %s: %v", where, err)
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	switch {
	case errors.As(err, &ua) && c.target.cacert == "":
		msg += "\nhint: the server's certificate is signed by a CA this machine does not trust: set COFFER_CACERT or --cacert to Coffer's CA (the server's <data-dir>/ca.pem)"
	case errors.As(err, &ua):
		msg += fmt.Sprintf("\nhint: the CA certificate %s (from %s) did not sign the server's certificate; is it this server's <data-dir>/ca.pem?", c.target.cacert, c.target.cacertFrom)
	case errors.As(err, &he):
		msg += "\nhint: connect with a name the certificate holds, or restart coffer-server with --san " + he.Host
	}
	return &ExitError{Code: ExitUnreachable, Err: errors.New(msg)}
}

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
		return usageError(errors.New("no token: give --token-file FILE, set COFFER_TOKEN, or use a context with a token file (coffer config set-context); the first admin token is in <data-dir>/admin.token"))
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.unreachable(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return c.unreachable(err)
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
		if err := json.Unmarshal(data, out); err != nil {
			return err
		}
	}
	if c.rec != nil {
		c.rec.record(data, out)
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
