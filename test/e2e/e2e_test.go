// Package e2e runs Coffer end to end: real coffer-server and coffer-agent
// processes on 127.0.0.1 and real containers on the local Docker engine.
package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/internal/dockertest"
	"coffer/test/testkit"
)

// stack is a server, an enrolled agent and the Docker engine.
type stack struct {
	t      *testing.T
	docker *dockertest.Env
	srv    *testkit.Server
	agent  *testkit.Proc
	dir    string
	label  string // unique label value for this test's containers
}

func randID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newStack(t *testing.T, serverArgs ...string) *stack {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end with Docker")
	}
	d := dockertest.Require(t)
	d.Image(t)
	dir := t.TempDir()
	// The server's, the agent's and the CLI's temporary files go into the
	// test's own dir, which the leak checks search (searching all of /tmp,
	// which other jobs share, takes minutes on a busy machine).
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", tmp)
	s := &stack{t: t, docker: d, dir: dir, label: "e2e-" + randID()}
	s.srv = testkit.StartServer(t, filepath.Join(dir, "server"), serverArgs...)
	join := strings.TrimSpace(s.srv.MustCLI(t, "", "token", "create", "--role", "agent", "--ttl", "10m"))
	s.agent = s.startAgent(join)
	s.eventually("agent connected", 20*time.Second, func() bool {
		return strings.Contains(s.srv.MustCLI(t, "", "agent", "ls"), "connected")
	})
	return s
}

func (s *stack) startAgent(join string) *testkit.Proc {
	// The agent serves only this test's containers: tests of other packages
	// run containers on the same engine at the same time.
	args := []string{"--server", s.srv.Addr, "--ca-cert", s.srv.CA, "--state-dir", filepath.Join(s.dir, "agent"), "--name", "e2e-host", "--log-level", "debug",
		"--only-labels", "coffer.test=" + s.label}
	if join != "" {
		args = append(args, "--join-token", join)
	}
	return testkit.Start(s.t, testkit.Bin(s.t, "coffer-agent"), args...)
}

// run starts a container of this test (labelled for this test's agent).
func (s *stack) run(o dockertest.RunOpts) dockertest.ContainerRef {
	s.t.Helper()
	labels := map[string]string{"coffer.test": s.label}
	for k, v := range o.Labels {
		labels[k] = v
	}
	o.Labels = labels
	return s.docker.Run(s.t, o)
}

// eventually polls cond until it holds or the timeout passes.
func (s *stack) eventually(what string, timeout time.Duration, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %s\nserver logs:\n%s\nagent logs:\n%s", what, tail(s.srv.Logs()), tail(s.agent.Logs()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string) string {
	lines := strings.Split(s, "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

// read returns the content of /run/secrets/<file> in a container, and
// whether it exists.
func (s *stack) read(id, file string) (string, bool) {
	out, err := s.docker.Exec(s.t, id, "cat", "/run/secrets/"+file)
	if err != nil {
		return "", false
	}
	return out, true
}

func (s *stack) waitContent(id, file, want string) {
	s.t.Helper()
	s.eventually("content of "+file+" in "+id[:12], 15*time.Second, func() bool {
		got, ok := s.read(id, file)
		return ok && got == want
	})
}

func (s *stack) waitAbsent(id, file string) {
	s.t.Helper()
	s.eventually(file+" gone from "+id[:12], 15*time.Second, func() bool {
		_, ok := s.read(id, file)
		return !ok
	})
}

// grepTree reports the files under root that contain needle (files over
// 64 MiB and special files are skipped).
func grepTree(root, needle string) []string {
	var hits []string
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		if fi.IsDir() && (p == "/proc" || p == "/sys" || p == "/dev") {
			return filepath.SkipDir
		}
		if !fi.Mode().IsRegular() || fi.Size() > 64<<20 {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), needle) {
			hits = append(hits, p)
		}
		return nil
	})
	return hits
}
