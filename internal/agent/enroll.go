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
	"strings"
	"time"

	"coffer/internal/identity"
)

// ErrNotEnrolled is returned when the state dir holds no identity and no
// join token was given.
var ErrNotEnrolled = errors.New("agent is not enrolled: give --join-token (from `coffer token create --role agent`), or on a Kubernetes node --k8s-token-file (the pod's projected ServiceAccount token)")

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
	return LoadOrEnrollWith(ctx, server, caPEM, stateDir, name, Credential{JoinToken: joinToken})
}

// Credential is what an agent enrolls with the first time: a join token,
// or on a Kubernetes node the file of the ServiceAccount token the kubelet
// projects into its pod (audience coffer; see docs/kubernetes.md).
type Credential struct {
	JoinToken    string
	K8sTokenFile string
}

// maxK8sToken bounds the token file read.
const maxK8sToken = 64 << 10

// k8sCSRName is the name in the request of an agent enrolling by
// attestation without a name: the server names it after its node and
// ignores the request's names anyway.
const k8sCSRName = "k8s-node"

// LoadOrEnrollWith is LoadOrEnroll with either credential. With a
// Kubernetes token the server names the agent after its node: name may be
// "" (if given, the server refuses any other). The token is read from its
// file only when the agent must enroll, and is never logged or saved.
func LoadOrEnrollWith(ctx context.Context, server string, caPEM []byte, stateDir, name string, cred Credential) (tls.Certificate, error) {
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
	if cred.JoinToken != "" && cred.K8sTokenFile != "" {
		return tls.Certificate{}, errors.New("enroll: give a join token or a Kubernetes token file, not both")
	}
	body := map[string]any{}
	switch {
	case cred.K8sTokenFile != "":
		tok, err := readK8sToken(cred.K8sTokenFile)
		if err != nil {
			return tls.Certificate{}, err
		}
		body["k8s_token"] = tok
	case cred.JoinToken != "":
		body["join_token"] = cred.JoinToken
	default:
		return tls.Certificate{}, fmt.Errorf("%w (state dir %s: %v)", ErrNotEnrolled, stateDir, err)
	}
	csrName := name
	if name != "" {
		body["name"] = name
	} else if cred.K8sTokenFile != "" {
		csrName = k8sCSRName
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return tls.Certificate{}, err
	}
	key, err := identity.NewAgentKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	csr, err := identity.NewCSR(key, csrName)
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
	body["csr"] = csr
	reqBody, _ := json.Marshal(body)
	var resp *http.Response
	var errs []error
	start := rand.N(len(servers))
	for i := range servers {
		addr := servers[(start+i)%len(servers)]
		req, err := http.NewRequestWithContext(ctx, "POST", "https://"+addr+"/v1/enroll", bytes.NewReader(reqBody))
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
		if resp.StatusCode == http.StatusConflict && cred.K8sTokenFile != "" {
			return tls.Certificate{}, fmt.Errorf("enroll by Kubernetes attestation: %w (HTTP 409): %s", ErrNameTaken, e.Error)
		}
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

// readK8sToken reads a projected ServiceAccount token file; errors name the
// file, never its content.
func readK8sToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("--k8s-token-file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxK8sToken+1))
	if err != nil {
		return "", fmt.Errorf("--k8s-token-file: %w", err)
	}
	if len(b) > maxK8sToken {
		return "", fmt.Errorf("--k8s-token-file %s: larger than %d bytes: not a ServiceAccount token", path, maxK8sToken)
	}
	tok := strings.TrimSpace(string(b))
	clear(b)
	if tok == "" {
		return "", fmt.Errorf("--k8s-token-file %s: empty (is the projected serviceAccountToken volume mounted?)", path)
	}
	return tok, nil
}
