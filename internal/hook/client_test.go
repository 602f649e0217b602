package hook

import (
	"bytes"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listenerAt listens on a socket and answers every request with reply (or
// with raw bytes, or never).
func listenerAt(t *testing.T, answer func(c net.Conn)) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "hook.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); answer(c) }()
		}
	}()
	return sock
}

func TestRunExitCodes(t *testing.T) {
	state := `{"id":"` + testID + `","pid":4242}`
	strict := `{"id":"` + testID + `","pid":4242,"annotations":{"coffer/require-secrets":"true"}}`
	reply := func(r string) func(net.Conn) {
		return func(c net.Conn) {
			var req request
			_ = readJSON(c, maxRequestBytes, &req)
			c.Write([]byte(r))
		}
	}
	never := func(c net.Conn) { time.Sleep(3 * time.Second) }
	gone := filepath.Join(t.TempDir(), "none.sock")
	for _, c := range []struct {
		name, stdin, socket string
		want                int
		msg                 string
	}{
		{"bad stdin", "garbage", gone, ExitUsage, "bad OCI state"},
		{"pod sandbox, agent down, pod requires", `{"id":"` + testID + `","pid":4242,"annotations":{"coffer/require-secrets":"true","io.kubernetes.cri-o.ContainerType":"sandbox"}}`, gone, ExitStart, ""},
		{"agent down", state, gone, ExitStart, "starts without early delivery"},
		{"agent down, pod requires", strict, gone, ExitRefuse, "coffer/require-secrets=true"},
		{"ready", state, listenerAt(t, reply(`{"v":1,"start":true,"ready":true}`)), ExitStart, ""},
		{"not ready, may start", state, listenerAt(t, reply(`{"v":1,"start":true,"message":"later"}`)), ExitStart, "later"},
		{"refused", strict, listenerAt(t, reply(`{"v":1,"start":false,"message":"no files yet"}`)), ExitRefuse, "no files yet"},
		{"garbage reply", state, listenerAt(t, reply(`garbage`)), ExitStart, "unreachable"},
		{"garbage reply, pod requires", strict, listenerAt(t, reply(`garbage`)), ExitRefuse, "unreachable"},
		{"other version", state, listenerAt(t, reply(`{"v":9,"start":false}`)), ExitStart, "protocol version"},
		{"no answer", state, listenerAt(t, never), ExitStart, "no answer within"},
		{"no answer, pod requires", strict, listenerAt(t, never), ExitRefuse, "no answer within"},
	} {
		var stderr bytes.Buffer
		start := time.Now()
		got := Run(strings.NewReader(c.stdin), &stderr, c.socket, 300*time.Millisecond)
		if got != c.want || !strings.Contains(stderr.String(), c.msg) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", c.name, got, stderr.String(), c.want, c.msg)
		}
		if time.Since(start) > 2*time.Second {
			t.Errorf("%s: the hook outlived its timeout by far: %v", c.name, time.Since(start))
		}
	}
}
