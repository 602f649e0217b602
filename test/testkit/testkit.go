// Package testkit builds Coffer's binaries once per test process and runs
// real coffer-server and coffer-agent processes on 127.0.0.1 for end-to-end
// tests. Everything it starts is stopped at test cleanup.
package testkit

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
	// baseTmp is the temp dir when the package starts: a test may point
	// TMPDIR at its own dir, which goes when it ends, before later tests
	// use the binaries.
	baseTmp = os.TempDir()
)

// Bin returns the path of a freshly built Coffer binary ("coffer",
// "coffer-server", "coffer-agent").
func Bin(t testing.TB, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		binDir, buildErr = os.MkdirTemp(baseTmp, "coffer-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/coffer", "./cmd/coffer-server", "./cmd/coffer-agent")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

// FreeAddr returns a free 127.0.0.1 port.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Proc is a running Coffer process.
type Proc struct {
	cmd  *exec.Cmd
	logs *Buffer
	done chan struct{}
}

// Buffer is a bytes.Buffer safe for concurrent writers (a process's or a
// logger's output).
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs bin with args; it is stopped (SIGTERM, then SIGKILL) at cleanup.
func Start(t testing.TB, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{cmd: exec.Command(bin, args...), logs: &Buffer{}, done: make(chan struct{})}
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.Stop() })
	return p
}

// Logs returns what the process wrote so far.
func (p *Proc) Logs() string { return p.logs.String() }

// Stop sends SIGTERM and waits (SIGKILL after 10 s).
func (p *Proc) Stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.Kill()
	}
}

// Kill sends SIGKILL and waits.
func (p *Proc) Kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Server is a running coffer-server.
type Server struct {
	*Proc
	Addr, DataDir, CA, Token string
}

// StartServer runs coffer-server on a free loopback port with dataDir.
func StartServer(t testing.TB, dataDir string, args ...string) *Server {
	t.Helper()
	return StartServerAt(t, FreeAddr(t), dataDir, args...)
}

// StartServerAt runs coffer-server on addr and waits until it serves.
func StartServerAt(t testing.TB, addr, dataDir string, args ...string) *Server {
	t.Helper()
	p := Start(t, Bin(t, "coffer-server"), append([]string{"--data-dir", dataDir, "--listen", addr}, args...)...)
	s := &Server{Proc: p, Addr: addr, DataDir: dataDir, CA: filepath.Join(dataDir, "ca.pem")}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("coffer-server did not start:\n%s", p.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	s.Token = strings.TrimSpace(string(tok))
	return s
}

// CLI runs the coffer CLI against s with stdin; it returns stdout, stderr
// and the exit code.
func (s *Server) CLI(t testing.TB, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(Bin(t, "coffer"), args...)
	cmd.Env = append(os.Environ(), "COFFER_ADDR=https://"+s.Addr, "COFFER_TOKEN="+s.Token, "COFFER_CACERT="+s.CA)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// MustCLI is CLI that fails the test on a non-zero exit.
func (s *Server) MustCLI(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, errOut, code := s.CLI(t, stdin, args...)
	if code != 0 {
		t.Fatalf("coffer %s: exit %d: %s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}
