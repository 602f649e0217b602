package etcdtest

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSingleMember(t *testing.T) {
	start := time.Now()
	c := Start(t, Options{})
	t.Logf("single member healthy after %s", time.Since(start).Round(time.Millisecond))
	c.Etcdctl(t, "put", "k", "v")
	if got := strings.TrimSpace(string(c.Etcdctl(t, "get", "k", "--print-value-only"))); got != "v" {
		t.Fatalf("get k = %q", got)
	}
	checkLoopbackOnly(t, c.Members[0])
}

func TestClusterFaults(t *testing.T) {
	c := Start(t, Options{Members: 3})
	for _, m := range c.Members {
		checkLoopbackOnly(t, m)
	}
	c.Etcdctl(t, "put", "k", "1")
	m := c.Members[0]
	if err := m.Kill(); err != nil {
		t.Fatal(err)
	}
	if m.Running() || m.Healthy(context.Background()) {
		t.Fatal("killed member still running or healthy")
	}
	// The two others keep a quorum: once they have a leader, writes go on
	// (etcdctl picks a live endpoint).
	if err := c.WaitHealthy(); err != nil {
		t.Fatal(err)
	}
	c.Etcdctl(t, "put", "k", "2")
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	// The restarted member catches up from its data dir and the leader.
	deadline := time.Now().Add(StartTimeout)
	for {
		out := c.Etcdctl(t, "--endpoints", m.ClientURL, "get", "k", "--print-value-only")
		if strings.TrimSpace(string(out)) == "2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted member serves %q", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := c.Members[1].Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Members[1].Restart(); err != nil {
		t.Fatal(err)
	}
}

func TestTLSClientCertAuth(t *testing.T) {
	ca := NewCA(t, "etcdtest-ca")
	c := Start(t, Options{TLS: ca, ClientCertAuth: true})
	if !strings.HasPrefix(c.Members[0].ClientURL, "https://127.0.0.1:") {
		t.Fatalf("client URL %s", c.Members[0].ClientURL)
	}
	c.Etcdctl(t, "put", "k", "v") // with the kit's client certificate
	for _, f := range []string{c.Client.Key} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file %s: %v %v", f, fi.Mode(), err)
		}
	}
}

// checkLoopbackOnly reads the member's listening TCP sockets from /proc and
// fails if any is bound to an address other than 127.0.0.1.
func checkLoopbackOnly(t *testing.T, m *Member) {
	t.Helper()
	pid := m.PID()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Skipf("cannot read the member's sockets: %v", err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var listening []string
	for _, table := range []string{"tcp", "tcp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local_address rem_address st ... inode (field 9)
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
				continue
			}
			addr := parseProcAddr(fields[1])
			listening = append(listening, addr)
			if !strings.HasPrefix(addr, "127.0.0.1:") {
				t.Errorf("member %s listens on %s", m.Name, addr)
			}
		}
		f.Close()
	}
	if len(listening) != 3 {
		t.Errorf("member %s listens on %v, want exactly its client, peer and metrics ports", m.Name, listening)
	}
}

// parseProcAddr turns /proc/net/tcp's "0100007F:1F90" into "127.0.0.1:8080"
// (IPv4) or a hex IPv6 form (which never equals a 127.0.0.1 address).
func parseProcAddr(s string) string {
	ip, port, _ := strings.Cut(s, ":")
	p, _ := strconv.ParseUint(port, 16, 16)
	b, _ := hex.DecodeString(ip)
	if len(b) == 4 {
		return net.JoinHostPort(net.IPv4(b[3], b[2], b[1], b[0]).String(), strconv.Itoa(int(p)))
	}
	return "[" + ip + "]:" + strconv.Itoa(int(p))
}
