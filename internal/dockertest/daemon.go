package dockertest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Daemon is a private dockerd with its own data root, exec root, pid file and
// unix socket, all in a temporary directory, started with --bridge=none
// --iptables=false. A test may stop and restart it; it is stopped and its
// directory removed when the test ends.
type Daemon struct {
	Dir  string // temporary directory holding everything
	Host string // "unix://<Dir>/docker.sock"

	cmd   *exec.Cmd
	done  chan struct{}
	extra []string // further dockerd arguments
}

// StartDaemon starts a private dockerd, or skips t (even under
// COFFER_REQUIRE_DOCKER=1, as the machine may not allow a second engine)
// when that fails.
func StartDaemon(t testing.TB) *Daemon {
	t.Helper()
	return startDaemon(t, nil)
}

// startDaemon is StartDaemon with further dockerd arguments.
func startDaemon(t testing.TB, extra []string) *Daemon {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "dockertest: private dockerd needs root")
	}
	if _, err := exec.LookPath("dockerd"); err != nil {
		t.Skipf("dockertest: no dockerd binary: %v", err)
	}
	// A short path: containerd's sockets live under the exec root and unix
	// socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("/tmp", "cofferd-")
	if err != nil {
		t.Skipf("dockertest: %v", err)
	}
	d := &Daemon{Dir: dir, Host: "unix://" + filepath.Join(dir, "docker.sock"), extra: extra}
	t.Cleanup(func() {
		d.Stop(t)
		// dockerd bind-mounts its data root onto itself.
		_ = syscall.Unmount(filepath.Join(dir, "data"), syscall.MNT_DETACH)
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("dockertest: remove %s: %v", dir, err)
		}
	})
	if err := d.start(); err != nil {
		t.Skipf("dockertest: private dockerd did not start: %v\n%s", err, d.logTail())
	}
	return d
}

// Env returns an Env that talks to this daemon.
func (d *Daemon) Env() *Env { return &Env{Host: d.Host} }

func (d *Daemon) start() error {
	log, err := os.OpenFile(filepath.Join(d.Dir, "dockerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command("dockerd",
		"--data-root", filepath.Join(d.Dir, "data"),
		"--exec-root", filepath.Join(d.Dir, "exec"),
		"--pidfile", filepath.Join(d.Dir, "docker.pid"),
		"-H", d.Host,
		"--bridge=none", "--iptables=false", "--ip6tables=false",
		"--shutdown-timeout", "2",
	)
	cmd.Args = append(cmd.Args, d.extra...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return err
	}
	d.cmd, d.done = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(d.done)

	env := d.Env()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := env.ping(2 * time.Second); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			d.kill()
			return fmt.Errorf("not answering after 30s: %w", err)
		}
		select {
		case <-d.done:
			return errors.New("dockerd exited")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop stops the daemon gracefully (SIGTERM; SIGKILL after 30 s) and waits
// for it to exit. Its containers stop with it. Stopping a stopped daemon does
// nothing.
func (d *Daemon) Stop(t testing.TB) {
	t.Helper()
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		t.Logf("dockertest: dockerd ignored SIGTERM for 30s, killing it")
		d.kill()
	}
	d.cmd = nil
}

func (d *Daemon) kill() {
	_ = d.cmd.Process.Kill()
	<-d.done
}

// Restart stops the daemon and starts it again on the same directories;
// containers with a restart policy come back. It fails t if the daemon does
// not answer again.
func (d *Daemon) Restart(t testing.TB) {
	t.Helper()
	d.Stop(t)
	if err := d.start(); err != nil {
		t.Fatalf("dockertest: restart dockerd: %v\n%s", err, d.logTail())
	}
}

func (d *Daemon) logTail() string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "dockerd.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}
