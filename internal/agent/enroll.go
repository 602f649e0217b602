package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"time"

	"coffer/internal/identity"
)

// ErrNotEnrolled is returned when the state dir holds no identity and no
// join token was given.
var ErrNotEnrolled = errors.New("agent is not enrolled: give --join-token (from `coffer token create --role agent`)")

// ErrNameTaken is returned when the server already has an agent of this
// name. The join token was not used: enroll under another name (--name) or
// remove the old agent first (coffer agent rm NAME) and run again.
var ErrNameTaken = errors.New("an agent of this name is already enrolled")

// LoadOrEnroll returns the agent's certificate from the state dir or, if it
// has none, enrolls with the join token: a CSR for a fresh key goes to the
// server (TLS 1.3, trusting only the pinned CA) and the signed certificate
// and key are saved in the state dir (0600). The join token is never saved.
//
// server may list several addresses (see ParseServers): enrollment starts
// at a random one and moves to the next only when it cannot connect at all,
// never once a request reached a server (a join token is single-use, and
// every server gives the same answer).
func LoadOrEnroll(ctx context.Context, server string, caPEM []byte, stateDir, name, joinToken string) (tls.Certificate, error) {
	cert, err := identity.LoadAgentIdentity(stateDir)
	if err == nil {
		return cert, nil
	}
	if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, identity.ErrFiles) {
		return tls.Certificate{}, err
	}
	servers, perr := ParseServers(server)
	if perr != nil {
		return tls.Certificate{}, perr
	}
	if joinToken == "" {
		return tls.Certificate{}, fmt.Errorf("%w (state dir %s: %v)", ErrNotEnrolled, stateDir, err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return tls.Certificate{}, err
	}
	key, err := identity.NewAgentKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	csr, err := identity.NewCSR(key, name)
	if err != nil {
		return tls.Certificate{}, err
	}
	tlsCfg, err := identity.ClientTLSConfig(caPEM, nil)
	if err != nil {
		return tls.Certificate{}, err
	}
	// One request: no keep-alive, or the connection would stay open (and
	// cost the server memory) for as long as the agent runs.
	tr := &http.Transport{TLSClientConfig: tlsCfg, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: tr}
	body, _ := json.Marshal(map[string]any{"join_token": joinToken, "name": name, "csr": csr})
	var resp *http.Response
	var errs []error
	start := rand.N(len(servers))
	for i := range servers {
		addr := servers[(start+i)%len(servers)]
		req, err := http.NewRequestWithContext(ctx, "POST", "https://"+addr+"/v1/enroll", bytes.NewReader(body))
		if err != nil {
			return tls.Certificate{}, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err = hc.Do(req)
		if err == nil {
			break
		}
		errs = append(errs, err)
		// Only a server that was never reached is skipped: the request
		// may have reached one that failed to answer, and the token may
		// be spent.
		if ctx.Err() != nil || !cheapFailure(err) {
			return tls.Certificate{}, fmt.Errorf("enroll: %w", err)
		}
	}
	if resp == nil {
		return tls.Certificate{}, fmt.Errorf("enroll: no server reachable: %w", errors.Join(errs...))
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		json.Unmarshal(data, &e)
		if resp.StatusCode == http.StatusConflict {
			return tls.Certificate{}, fmt.Errorf("enroll %q: %w (HTTP 409): the join token was not used and still works; "+
				"start coffer-agent with another --name, or remove the old agent with `coffer agent rm %s` first (server: %s)",
				name, ErrNameTaken, name, e.Error)
		}
		return tls.Certificate{}, fmt.Errorf("enroll refused (HTTP %d): %s", resp.StatusCode, e.Error)
	}
	var out struct {
		Certificate []byte `json:"certificate"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return tls.Certificate{}, fmt.Errorf("enroll: bad answer: %w", err)
	}
	if err := identity.SaveAgentIdentity(stateDir, out.Certificate, key); err != nil {
		return tls.Certificate{}, err
	}
	return identity.LoadAgentIdentity(stateDir)
}
