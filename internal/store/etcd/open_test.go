package etcd

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/internal/etcdtest"
)

// Bad endpoints and TLS mistakes give a clear error at Open, naming the
// endpoint and the cause, within the dial timeout; nothing is written.
func TestOpenUnreachable(t *testing.T) {
	ca := etcdtest.NewCA(t, "coffer-test-ca")
	other := etcdtest.NewCA(t, "another-ca")
	secure := etcdtest.Start(t, etcdtest.Options{TLS: ca, ClientCertAuth: true})
	plain := etcdtest.Start(t, etcdtest.Options{})
	tlsEP, plainEP := secure.Endpoints()[0], plain.Endpoints()[0]

	closed := freeAddr(t) // nothing listens there
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() { // accepts and never answers
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()

	notEtcd := httptest.NewServer(http.NotFoundHandler()) // a web server, not etcd
	defer notEtcd.Close()

	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // all in the error
	}{
		{"not etcd", Config{Endpoints: []string{notEtcd.URL}, DialTimeout: 2 * time.Second},
			[]string{notEtcd.URL, "etcd is unavailable"}},
		{"closed port", Config{Endpoints: []string{"http://" + closed}},
			[]string{"http://" + closed, "connection refused"}},
		{"silent port", Config{Endpoints: []string{"http://" + silent.Addr().String()}, DialTimeout: time.Second},
			[]string{"http://" + silent.Addr().String(), "no answer within 1s"}},
		{"one of two closed, other silent", Config{Endpoints: []string{"http://" + closed, "http://" + silent.Addr().String()}, DialTimeout: time.Second},
			[]string{"connection refused", "no answer within 1s"}},
		{"wrong CA", Config{Endpoints: []string{tlsEP}, CAFile: other.CertFile, CertFile: secure.Client.Cert, KeyFile: secure.Client.Key},
			[]string{tlsEP, "certificate signed by unknown authority"}},
		{"no client certificate", Config{Endpoints: []string{tlsEP}, CAFile: ca.CertFile},
			[]string{tlsEP, "certificate required", "set cert_file and key_file"}},
		{"certificate and key that do not match", Config{Endpoints: []string{tlsEP}, CAFile: ca.CertFile,
			CertFile: ca.Issue(t, "one", false).Cert, KeyFile: ca.Issue(t, "two", false).Key},
			[]string{"cert_file", "key_file", "does not match"}}, // refused before dialing
		{"http to a TLS port", Config{Endpoints: []string{"http" + strings.TrimPrefix(tlsEP, "https")}, DialTimeout: 2 * time.Second},
			[]string{"no answer within 2s", "does it serve TLS (https://)?"}},
		{"https to a plain port", Config{Endpoints: []string{"https" + strings.TrimPrefix(plainEP, "http")}, CAFile: ca.CertFile},
			[]string{"does not speak TLS"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			b, err := Open(context.Background(), tc.cfg)
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			if took := time.Since(start); took > 15*time.Second {
				t.Errorf("Open took %s", took)
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrConfig) {
				t.Errorf("error wraps neither ErrUnavailable nor ErrConfig")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q", w)
				}
			}
		})
	}
	// A client certificate of another CA: the server refuses it.
	intruder := other.Issue(t, "intruder3", false)
	_, err = Open(context.Background(), Config{Endpoints: []string{tlsEP}, CAFile: ca.CertFile, CertFile: intruder.Cert, KeyFile: intruder.Key})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "cert_file is not signed by a CA the server trusts") {
		t.Errorf("intruder's certificate: %v", err)
	}
	for _, c := range []*etcdtest.Cluster{secure, plain} {
		if out := c.Etcdctl(t, "get", "--prefix", "", "--keys-only"); len(strings.TrimSpace(string(out))) != 0 {
			t.Errorf("failed Opens wrote keys: %s", out)
		}
	}
}

func TestOpenCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Open(ctx, Config{Endpoints: []string{"http://127.0.0.1:1"}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Open with a canceled context = %v", err)
	}
}

// A configuration Open refuses names the field, before any connection.
func TestOpenBadConfig(t *testing.T) {
	dir := t.TempDir()
	ca := etcdtest.NewCA(t, "coffer-test-ca")
	cl := ca.Issue(t, "coffer", false)
	openKey := filepath.Join(dir, "open-key.pem")
	b, _ := os.ReadFile(cl.Key)
	os.WriteFile(openKey, b, 0o644)
	ok := []string{"https://127.0.0.1:2379"}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no endpoints", Config{}, "endpoints is empty"},
		{"bad scheme", Config{Endpoints: []string{"ftp://127.0.0.1:2379"}}, `endpoints[0] "ftp://127.0.0.1:2379"`},
		{"no port", Config{Endpoints: []string{"https://127.0.0.1"}}, `endpoints[0]`},
		{"bad port", Config{Endpoints: []string{"https://127.0.0.1:99999"}}, "bad port"},
		{"path", Config{Endpoints: []string{"https://127.0.0.1:2379/v3"}}, `endpoints[0]`},
		{"bare host", Config{Endpoints: []string{"127.0.0.1:2379"}}, `endpoints[0]`},
		{"second endpoint bad", Config{Endpoints: []string{"https://127.0.0.1:2379", "x"}}, `endpoints[1] "x"`},
		{"plain http off loopback", Config{Endpoints: []string{"http://10.0.0.1:2379"}}, "plain http"},
		{"mixed schemes", Config{Endpoints: []string{"http://127.0.0.1:2379", "https://127.0.0.1:2380"}}, "mix http and https"},
		{"TLS files with http", Config{Endpoints: []string{"http://127.0.0.1:2379"}, CAFile: ca.CertFile}, "use https://"},
		{"prefix with slash", Config{Endpoints: ok, Prefix: "a/b"}, `prefix "a/b"`},
		{"prefix too long", Config{Endpoints: ok, Prefix: strings.Repeat("a", 65)}, "prefix"},
		{"prefix with NUL", Config{Endpoints: ok, Prefix: "a\x00"}, "prefix"},
		{"cert without key", Config{Endpoints: ok, CertFile: cl.Cert}, "cert_file and key_file go together"},
		{"missing CA file", Config{Endpoints: ok, CAFile: filepath.Join(dir, "nope.pem")}, "ca_file"},
		{"CA file not PEM", Config{Endpoints: ok, CAFile: openKey + "x"}, "ca_file"},
		{"key readable by others", Config{Endpoints: ok, CertFile: cl.Cert, KeyFile: openKey}, "chmod 600"},
		{"max_txn_ops too small", Config{Endpoints: ok, MaxTxnOps: 2}, "max_txn_ops"},
		{"max_request_bytes too small", Config{Endpoints: ok, MaxRequestBytes: 1000}, "max_request_bytes"},
		{"negative dial_timeout", Config{Endpoints: ok, DialTimeout: -1}, "dial_timeout"},
		{"negative request_timeout", Config{Endpoints: ok, RequestTimeout: -1}, "request_timeout"},
		{"max_retries too large", Config{Endpoints: ok, MaxRetries: 5000}, "max_retries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(context.Background(), tc.cfg)
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open = %v, want ErrConfig naming %q", err, tc.want)
			}
		})
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
