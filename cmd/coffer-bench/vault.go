package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// vaultProc is a Vault dev server (in-memory storage, unsealed, root token
// "root") with a TLS listener and its own CA (-dev-tls).
type vaultProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	addr string
	ca   []byte
}

func startVault(ctx context.Context, bin, dir string) (*vaultProc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	certs := filepath.Join(dir, "vault-tls")
	if err := os.MkdirAll(certs, 0o700); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "vault.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	v := &vaultProc{addr: addr, done: make(chan struct{}), cmd: exec.Command(bin, "server", "-dev", "-dev-tls",
		"-dev-tls-cert-dir="+certs, "-dev-root-token-id=root", "-dev-listen-address="+addr, "-dev-no-store-token", "-log-level=warn")}
	v.cmd.Stdout, v.cmd.Stderr = logf, logf
	v.cmd.Env = append(os.Environ(), "HOME="+dir)
	if err := v.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { v.cmd.Wait(); close(v.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if v.ca, err = os.ReadFile(filepath.Join(certs, "vault-ca.pem")); err == nil {
			hc := v.client()
			if resp, err := hc.Get("https://" + addr + "/v1/sys/health"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return v, nil
				}
			}
		}
		select {
		case <-v.done:
			return nil, fmt.Errorf("vault exited at start; see %s", logf.Name())
		case <-ctx.Done():
			v.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			v.Stop()
			return nil, errors.New("vault did not become healthy within 60s")
		}
	}
}

// client returns an HTTP client with its own connection pool, trusting
// Vault's dev CA only.
func (v *vaultProc) client() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(v.ca)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
	}}
}

func (v *vaultProc) Stop() {
	v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-v.done:
	case <-time.After(10 * time.Second):
		v.cmd.Process.Kill()
		<-v.done
	}
}

// call sends one request with the root token.
func (v *vaultProc) call(ctx context.Context, hc *http.Client, method, path string, body any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+v.addr+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("X-Vault-Token", "root")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("vault %s %s: HTTP %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(data))
	}
	return nil
}

// setupVault starts a Vault dev server, writes o.Secrets KV v2 secrets and
// returns the read operation: each worker has its own connection and reads
// a random secret.
func setupVault(ctx context.Context, o fetchOpts, dir string, rep *Report) (*fetchTarget, error) {
	v, err := startVault(ctx, o.Vault, dir)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			v.Stop()
		}
	}()
	out, _ := exec.Command(o.Vault, "version").Output()
	rep.note("vault: %s", bytes.TrimSpace(out))
	o.logf("vault: dev server %s; %d secrets", v.addr, o.Secrets)
	hc := v.client()
	if o.VaultAudit {
		if err := v.call(ctx, hc, "PUT", "/v1/sys/audit/file", map[string]any{
			"type": "file", "options": map[string]string{"file_path": filepath.Join(dir, "vault-audit.log")},
		}); err != nil {
			return nil, err
		}
	}
	if err := parallel(ctx, o.Secrets, 16, func(i int) error {
		return v.call(ctx, hc, "PUT", fmt.Sprintf("/v1/secret/data/fetch/k%d", i), map[string]any{"data": map[string]string{"value": randomValue()}})
	}); err != nil {
		return nil, err
	}
	clients := make([]*http.Client, o.Concurrency)
	for i := range clients {
		clients[i] = v.client()
	}
	what := "Vault KV v2 read over TLS"
	if o.VaultAudit {
		what += ", file audit device"
	}
	ok = true
	return &fetchTarget{
		system: "Vault", unit: "reads", one: "read", pid: v.cmd.Process.Pid, close: v.Stop,
		name: fmt.Sprintf("%s (C=%d)", what, o.Concurrency),
		op: func(w int) error {
			return v.call(ctx, clients[w], "GET", fmt.Sprintf("/v1/secret/data/fetch/k%d", mrand.N(o.Secrets)), nil)
		},
	}, nil
}
