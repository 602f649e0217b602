// Package etcdtest starts real etcd servers for tests: one member or a
// cluster of several, on free 127.0.0.1 ports in a temporary directory.
//
// Every URL a member could bind (client, peer, metrics) is set explicitly to
// 127.0.0.1, so nothing listens elsewhere. Start waits until every member
// reports healthy and registers a t.Cleanup that kills whatever is still
// running; the data directories live under t.TempDir. Members can be
// stopped, killed and restarted one at a time for fault tests.
//
// The etcd binary comes from internal/testtools (scripts/test-tools.sh
// builds it): without it, Start skips the test, or fails it under
// COFFER_REQUIRE_TOOLS=1.
//
// Members run with --unsafe-no-fsync: a test server need not survive a
// power cut, and fsync on a shared disk is slow. A killed process still
// leaves its writes in the page cache, so Kill and Restart behave as in
// production.
package etcdtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"coffer/internal/testtools"
)

// StartTimeout bounds how long Start and Restart wait for members to become
// healthy. It is generous: the machine may be busy.
const StartTimeout = 60 * time.Second

// Options configures a cluster. The zero value is one plain-http member.
type Options struct {
	// Members is the cluster size (default 1).
	Members int
	// TLS, when set, serves the client URLs over https with a server
	// certificate issued by this CA for 127.0.0.1 and localhost.
	TLS *CA
	// ClientCertAuth makes the members require a client certificate
	// signed by TLS (etcd's --client-cert-auth). It needs TLS.
	ClientCertAuth bool
	// Flags are extra etcd flags given to every member, e.g.
	// "--max-txn-ops=256".
	Flags []string
}

// Cluster is a running etcd cluster.
type Cluster struct {
	t       testing.TB
	bin     string
	opts    Options
	dir     string
	Members []*Member
	// Client holds the certificate files of a client the CA trusts, when
	// the cluster serves TLS (for etcdctl and the tests' own clients).
	Client CertFiles
}

// Member is one etcd process.
type Member struct {
	c          *Cluster
	Name       string
	ClientURL  string // http://127.0.0.1:port or https://127.0.0.1:port
	PeerURL    string
	MetricsURL string // always plain http; serves /health
	DataDir    string
	LogFile    string
	args       []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start starts a cluster and waits until all its members are healthy. It
// skips the test when the etcd binary is not built.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	bin := testtools.Path(t, testtools.Etcd)
	if o.Members <= 0 {
		o.Members = 1
	}
	if o.ClientCertAuth && o.TLS == nil {
		t.Fatal("etcdtest: ClientCertAuth needs TLS")
	}
	c := &Cluster{t: t, bin: bin, opts: o, dir: t.TempDir()}
	if o.TLS != nil {
		c.Client = o.TLS.Issue(t, "etcdtest-client", false)
	}
	t.Cleanup(c.kill)
	// A free port found by listening on :0 can be taken by another process
	// before etcd binds it; try again with fresh ports when that happens.
	var err error
	for attempt := range 3 {
		if err = c.start(attempt); err == nil {
			return c
		}
		c.kill()
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	t.Fatalf("etcdtest: %v", err)
	return nil
}

var errPortTaken = errors.New("address already in use")

func (c *Cluster) start(attempt int) error {
	ports, err := freePorts(3 * c.opts.Members)
	if err != nil {
		return err
	}
	scheme := "http"
	if c.opts.TLS != nil {
		scheme = "https"
	}
	c.Members = nil
	var initial []string
	for i := range c.opts.Members {
		m := &Member{
			c:          c,
			Name:       fmt.Sprintf("m%d", i+1),
			ClientURL:  fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[3*i]),
			PeerURL:    fmt.Sprintf("http://127.0.0.1:%d", ports[3*i+1]),
			MetricsURL: fmt.Sprintf("http://127.0.0.1:%d", ports[3*i+2]),
		}
		base := filepath.Join(c.dir, fmt.Sprintf("try%d-%s", attempt, m.Name))
		m.DataDir, m.LogFile = base+".etcd", base+".log"
		initial = append(initial, m.Name+"="+m.PeerURL)
		c.Members = append(c.Members, m)
	}
	for _, m := range c.Members {
		m.args = []string{
			"--name", m.Name,
			"--data-dir", m.DataDir,
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
			"--listen-metrics-urls", m.MetricsURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-token", "etcdtest",
			"--initial-cluster-state", "new",
			"--unsafe-no-fsync",
			"--log-level", "warn", "--log-outputs", "stderr",
		}
		if ca := c.opts.TLS; ca != nil {
			srv := ca.Issue(c.t, "etcdtest-"+m.Name, true)
			m.args = append(m.args, "--cert-file", srv.Cert, "--key-file", srv.Key, "--trusted-ca-file", ca.CertFile)
			if c.opts.ClientCertAuth {
				m.args = append(m.args, "--client-cert-auth")
			}
		}
		m.args = append(m.args, c.opts.Flags...)
		if err := m.spawn(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	for _, m := range c.Members {
		if err := m.waitHealthy(ctx); err != nil {
			return err
		}
	}
	return nil
}

// WaitHealthy waits (up to StartTimeout) until every running member is
// healthy: after a member is killed, that is when the others have elected
// a leader again and serve writes.
func (c *Cluster) WaitHealthy() error {
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	for _, m := range c.Members {
		if m.Running() {
			if err := m.waitHealthy(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// Endpoints returns the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.ClientURL)
	}
	return eps
}

// Etcdctl runs etcdctl against the cluster (with the kit's client
// certificate when it serves TLS) and returns its standard output.
func (c *Cluster) Etcdctl(t testing.TB, args ...string) []byte {
	t.Helper()
	bin := testtools.Path(t, testtools.Etcdctl)
	full := []string{"--endpoints", strings.Join(c.Endpoints(), ","), "--dial-timeout", "5s", "--command-timeout", "20s"}
	if c.opts.TLS != nil {
		full = append(full, "--cacert", c.opts.TLS.CertFile, "--cert", c.Client.Cert, "--key", c.Client.Key)
	}
	cmd := exec.Command(bin, append(full, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("etcdctl %s: %v: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

func (c *Cluster) kill() {
	for _, m := range c.Members {
		_ = m.Kill()
	}
	if c.t.Failed() {
		for _, m := range c.Members {
			c.t.Logf("etcdtest: log of %s:\n%s", m.Name, tail(m.LogFile, 40))
		}
	}
}

func (m *Member) spawn() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return fmt.Errorf("member %s is already running", m.Name)
	}
	log, err := os.OpenFile(m.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(m.c.bin, m.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test binary
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start etcd member %s: %w", m.Name, err)
	}
	done := make(chan struct{})
	m.cmd, m.done = cmd, done
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(done)
	}()
	return nil
}

// Running reports whether the member's process is running.
func (m *Member) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd != nil
}

// PID returns the member's process id, or 0 when it is not running.
func (m *Member) PID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// Stop ends the member with SIGTERM (a clean shutdown) and waits for it.
func (m *Member) Stop() error { return m.signal(syscall.SIGTERM) }

// Kill ends the member with SIGKILL (a crash) and waits for it.
func (m *Member) Kill() error { return m.signal(syscall.SIGKILL) }

func (m *Member) signal(sig syscall.Signal) error {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	m.mu.Lock()
	m.cmd, m.done = nil, nil
	m.mu.Unlock()
	return nil
}

// Restart starts a stopped or killed member again on the same URLs and
// data directory, and waits until it is healthy (which, in a cluster, needs
// a quorum of members running).
func (m *Member) Restart() error {
	if err := m.spawn(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	return m.waitHealthy(ctx)
}

// Healthy reports whether the member answers /health with "true" (it has a
// leader and can serve a quorum read).
func (m *Member) Healthy(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.MetricsURL+"/health", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var h struct {
		Health string `json:"health"`
	}
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&h) == nil && h.Health == "true"
}

func (m *Member) waitHealthy(ctx context.Context) error {
	for {
		m.mu.Lock()
		done := m.done
		m.mu.Unlock()
		if done == nil {
			return fmt.Errorf("member %s is not running", m.Name)
		}
		select {
		case <-done:
			log := tail(m.LogFile, 20)
			if strings.Contains(log, "address already in use") {
				return fmt.Errorf("member %s: %w", m.Name, errPortTaken)
			}
			return fmt.Errorf("member %s exited during start:\n%s", m.Name, log)
		default:
		}
		if m.Healthy(ctx) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("member %s not healthy after %s:\n%s", m.Name, StartTimeout, tail(m.LogFile, 20))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freePorts returns n distinct ports that were free on 127.0.0.1 a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		_, p, _ := net.SplitHostPort(l.Addr().String())
		port, _ := strconv.Atoi(p)
		ports = append(ports, port)
	}
	return ports, nil
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Snapshot saves a snapshot of the keyspace (etcdctl snapshot save, through
// the first running member) to a file in the test's temp dir and returns
// its path.
func (c *Cluster) Snapshot(t testing.TB) string {
	t.Helper()
	var m *Member
	for _, x := range c.Members {
		if x.Running() {
			m = x
			break
		}
	}
	if m == nil {
		t.Fatal("etcdtest: no member running for a snapshot")
		return ""
	}
	p := filepath.Join(t.TempDir(), "snapshot.db")
	bin := testtools.Path(t, testtools.Etcdctl)
	args := []string{"--endpoints", m.ClientURL, "--dial-timeout", "5s", "--command-timeout", "60s"}
	if c.opts.TLS != nil {
		args = append(args, "--cacert", c.opts.TLS.CertFile, "--cert", c.Client.Cert, "--key", c.Client.Key)
	}
	if out, err := exec.Command(bin, append(args, "snapshot", "save", p)...).CombinedOutput(); err != nil {
		t.Fatalf("etcdctl snapshot save: %v: %s", err, out)
	}
	return p
}

// Restore replaces the data of a one-member cluster by a snapshot, as an
// operator restores a backup (etcdutl snapshot restore into a new data
// dir, then the member started on it), and waits until it is healthy.
func (c *Cluster) Restore(t testing.TB, snapshot string) {
	t.Helper()
	if len(c.Members) != 1 {
		t.Fatal("etcdtest: Restore is for a one-member cluster")
	}
	m := c.Members[0]
	bin := testtools.Path(t, testtools.Etcdutl)
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	restored := m.DataDir + ".restored"
	out, err := exec.Command(bin, "snapshot", "restore", snapshot, "--data-dir", restored,
		"--name", m.Name, "--initial-cluster", m.Name+"="+m.PeerURL,
		"--initial-advertise-peer-urls", m.PeerURL, "--initial-cluster-token", "etcdtest-restored").CombinedOutput()
	if err != nil {
		t.Fatalf("etcdutl snapshot restore: %v: %s", err, out)
	}
	if err := os.RemoveAll(m.DataDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(restored, m.DataDir); err != nil {
		t.Fatal(err)
	}
	if err := m.Restart(); err != nil {
		t.Fatalf("etcdtest: restart on the restored data: %v", err)
	}
}
