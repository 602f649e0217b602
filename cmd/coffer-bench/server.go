package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
)

// serverProc is a coffer-server child process on a free loopback port, with
// a REST client holding the bootstrap admin token.
type serverProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	Addr string
	// AgentAddr is where agents connect: Addr, or the experimental native
	// gRPC listener (--native-grpc).
	AgentAddr string
	// AgentAddrs, if set, spread the agents: agent i connects to
	// AgentAddrs[i % len] (fanout --servers).
	AgentAddrs []string
	Dir        string
	CAPEM      []byte
	token      string
	hc         *http.Client
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startServer runs bin with a data dir under dir, env added to its
// environment, and waits until it serves. Its log goes to dir/server.log.
func startServer(ctx context.Context, bin, dir string, env []string, extra ...string) (*serverProc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	return startServerAt(ctx, bin, dir, addr, "server.log", env, extra...)
}

// startServerAt is startServer on addr, logging to dir/logName.
func startServerAt(ctx context.Context, bin, dir, addr, logName string, env []string, extra ...string) (*serverProc, error) {
	s, err := launchServer(ctx, bin, dir, addr, logName, env, extra...)
	if err != nil {
		return nil, err
	}
	if err := s.connect(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// launchServer starts the server and waits until it listens.
func launchServer(ctx context.Context, bin, dir, addr, logName string, env []string, extra ...string) (*serverProc, error) {
	data := filepath.Join(dir, "server")
	logf, err := os.Create(filepath.Join(dir, logName))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := append([]string{"--data-dir", data, "--listen", addr, "--log-level", "warn"}, extra...)
	s := &serverProc{cmd: exec.Command(bin, args...), done: make(chan struct{}), Addr: addr, AgentAddr: addr, Dir: data}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.Env = append(os.Environ(), env...)
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("coffer-server exited at start; see %s", logf.Name())
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, errors.New("coffer-server did not listen within 30s")
		}
	}
	return s, nil
}

// connect reads the admin token and CA and makes the REST client.
func (s *serverProc) connect() error {
	data := s.Dir
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		return err
	}
	s.token = strings.TrimSpace(string(tok))
	if s.CAPEM, err = os.ReadFile(filepath.Join(data, "ca.pem")); err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CAPEM)
	s.hc = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 64,
	}}
	return nil
}

// Pid is the server's process id.
func (s *serverProc) Pid() int {
	return s.cmd.Process.Pid
}

// Stop ends the server: SIGTERM, then SIGKILL after 10 s.
func (s *serverProc) Stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// call sends a REST request with the admin token and decodes a JSON answer
// into out (if not nil).
func (s *serverProc) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+s.Addr+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// putRandomSecret stores a fresh random 32-byte value under name and
// returns the new version. The value never leaves this function.
func (s *serverProc) putRandomSecret(ctx context.Context, name string) (uint64, error) {
	v := make([]byte, 32)
	rand.Read(v)
	enc := base64.StdEncoding.EncodeToString(v)
	clear(v)
	var meta struct {
		Current uint64 `json:"current_version"`
	}
	if err := s.call(ctx, "PUT", "/v1/secrets/"+name, map[string]string{"value": enc}, &meta); err != nil {
		return 0, err
	}
	return meta.Current, nil
}

// binding is the body of PUT /v1/bindings/{name}.
type binding struct {
	Secret   string `json:"secret"`
	Selector string `json:"selector"`
	File     string `json:"file,omitempty"`
}

func (s *serverProc) putBinding(ctx context.Context, name string, b binding) error {
	return s.call(ctx, "PUT", "/v1/bindings/"+name, b, nil)
}

func (s *serverProc) deleteBinding(ctx context.Context, name string) error {
	return s.call(ctx, "DELETE", "/v1/bindings/"+name, nil, nil)
}

// joinToken creates a one-time agent join token.
func (s *serverProc) joinToken(ctx context.Context) (string, error) {
	var out struct {
		Token string `json:"token"`
	}
	err := s.call(ctx, "POST", "/v1/tokens", map[string]string{"role": "agent", "ttl": "1h"}, &out)
	return out.Token, err
}

// procUsage is a process's CPU time and memory, from /proc.
type procUsage struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	RSSBytes   uint64  `json:"rss_bytes"`
	PeakRSS    uint64  `json:"peak_rss_bytes"` // VmHWM
}

// usageOf reads /proc/<pid>/stat and status.
func usageOf(pid int) (procUsage, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return procUsage{}, err
	}
	st, err := p.Stat()
	if err != nil {
		return procUsage{}, err
	}
	status, err := p.NewStatus()
	if err != nil {
		return procUsage{}, err
	}
	return procUsage{CPUSeconds: st.CPUTime(), RSSBytes: status.VmRSS, PeakRSS: status.VmHWM}, nil
}
