package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock's After advances the clock by d and fires at once.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.waits = append(c.waits, d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestRenewer(t *testing.T, cert tls.Certificate, renew RenewFunc, clock *fakeClock, opts RenewerOptions) (*Renewer, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.Now = clock.Now
	r := NewRenewer(cert, renew, opts)
	r.after = clock.After
	return r, logs
}

func TestRenewerRenewsAtTwoThirdsAndSaves(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	clock := &fakeClock{now: time.Now()}
	const ttl = 3 * time.Hour
	initial := issueAgent(t, ca, "node-1", ttl, clock.Now())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type call struct {
		at      time.Time
		renewAt time.Time
		leaf    *x509.Certificate
	}
	var calls []call
	var r *Renewer
	renew := func(_ context.Context, key *ecdsa.PrivateKey, csr []byte) ([]byte, error) {
		calls = append(calls, call{clock.Now(), r.RenewAt(), r.Leaf()})
		if len(calls) == 3 {
			defer cancel()
		}
		return ca.signAgentCSR(csr, "node-1", ttl, clock.Now())
	}
	r, logs := newTestRenewer(t, initial, renew, clock, RenewerOptions{Dir: dir})
	if err := r.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if len(calls) != 3 {
		t.Fatalf("%d renewals, want 3", len(calls))
	}
	for i, c := range calls {
		life := c.leaf.NotAfter.Sub(c.leaf.NotBefore)
		lo := c.leaf.NotBefore.Add(time.Duration(float64(life) * (2.0/3 - 0.05)))
		hi := c.leaf.NotBefore.Add(time.Duration(float64(life) * (2.0/3 + 0.05)))
		if !c.at.Equal(c.renewAt) || c.at.Before(lo) || c.at.After(hi) {
			t.Errorf("renewal %d at %v after NotBefore; want %v (window %v to %v)", i,
				c.at.Sub(c.leaf.NotBefore), c.renewAt.Sub(c.leaf.NotBefore), lo.Sub(c.leaf.NotBefore), hi.Sub(c.leaf.NotBefore))
		}
		if i > 0 && c.leaf.SerialNumber.Cmp(calls[i-1].leaf.SerialNumber) == 0 {
			t.Errorf("renewal %d did not start from the renewed certificate", i)
		}
	}
	for _, w := range clock.waits {
		if w > maxSleep {
			t.Errorf("slept %v at once, want at most %v", w, maxSleep)
		}
	}
	cur := r.Leaf()
	if got, _ := r.GetClientCertificate(nil); !got.Leaf.Equal(cur) || cur.Equal(calls[2].leaf) {
		t.Error("GetClientCertificate does not serve the renewed certificate")
	}
	saved, err := LoadAgentIdentity(dir)
	if err != nil || !saved.Leaf.Equal(cur) {
		t.Fatalf("saved identity is not the current one: %v", err)
	}
	if n := strings.Count(logs.String(), "agent certificate renewed"); n != 3 {
		t.Errorf("%d renewal log lines, want 3:\n%s", n, logs)
	}
}

func TestRenewerJitter(t *testing.T) {
	ca := newTestCA(t)
	c := issueAgent(t, ca, "n", 24*time.Hour, time.Now())
	life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
	lo := c.Leaf.NotBefore.Add(time.Duration(float64(life) * (2.0/3 - 0.05)))
	hi := c.Leaf.NotBefore.Add(time.Duration(float64(life) * (2.0/3 + 0.05)))
	seen := map[time.Time]bool{}
	for range 100 {
		at := NewRenewer(c, nil, RenewerOptions{}).RenewAt()
		if at.Before(lo) || at.After(hi) {
			t.Fatalf("renewal at %v after NotBefore, outside [%v, %v]", at.Sub(c.Leaf.NotBefore), lo.Sub(c.Leaf.NotBefore), hi.Sub(c.Leaf.NotBefore))
		}
		seen[at] = true
	}
	if len(seen) < 50 {
		t.Errorf("only %d distinct renewal times in 100", len(seen))
	}
}

func TestRenewerRetriesAndWarnsAsExpiryNears(t *testing.T) {
	ca := newTestCA(t)
	clock := &fakeClock{now: time.Now()}
	initial := issueAgent(t, ca, "node-1", time.Hour, clock.Now())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var attempts []time.Time
	renew := func(_ context.Context, _ *ecdsa.PrivateKey, csr []byte) ([]byte, error) {
		attempts = append(attempts, clock.Now())
		// The server is unreachable until 5 minutes before expiry.
		if clock.Now().Before(initial.Leaf.NotAfter.Add(-5 * time.Minute)) {
			return nil, errors.New("connection refused")
		}
		cancel()
		return ca.signAgentCSR(csr, "node-1", time.Hour, clock.Now())
	}
	r, logs := newTestRenewer(t, initial, renew, clock, RenewerOptions{MinRetry: time.Second, MaxRetry: 2 * time.Minute})
	if err := r.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if r.Leaf().Equal(initial.Leaf) {
		t.Fatal("never renewed")
	}
	if last := attempts[len(attempts)-1]; !last.Before(initial.Leaf.NotAfter) {
		t.Errorf("renewed only after expiry, at %v", last)
	}
	// Between two attempts the renewer sleeps once: 1s, 2s, 4s, ... up to
	// MaxRetry, and never more than a quarter of the time left.
	var retries []time.Duration
	for i := 1; i < len(attempts); i++ {
		retries = append(retries, attempts[i].Sub(attempts[i-1]))
	}
	if len(retries) < 8 {
		t.Fatalf("retries %v", retries)
	}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		if retries[i] != want {
			t.Errorf("retry wait %d = %v, want %v (all: %v)", i, retries[i], want, retries)
		}
	}
	for i, w := range retries {
		if left := initial.Leaf.NotAfter.Sub(attempts[i]); w > 2*time.Minute || (w > left/4 && w > time.Second) {
			t.Errorf("retry wait %v with %v left", w, left)
		}
	}
	out := logs.String()
	for _, want := range []string{"level=WARN msg=\"agent certificate renewal failed; will retry\"",
		"level=ERROR msg=\"agent certificate expires soon and could not be renewed\"", "connection refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q", want)
		}
	}
}

func TestRenewerLogsExpired(t *testing.T) {
	ca := newTestCA(t)
	clock := &fakeClock{now: time.Now()}
	initial := issueAgent(t, ca, "node-1", time.Hour, clock.Now().Add(-2*time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	renew := func(context.Context, *ecdsa.PrivateKey, []byte) ([]byte, error) {
		if n++; n == 20 {
			cancel()
		}
		return nil, errors.New("tls: expired certificate")
	}
	r, logs := newTestRenewer(t, initial, renew, clock, RenewerOptions{MaxRetry: time.Minute})
	if err := r.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if got := strings.Count(logs.String(), "level=ERROR msg=\"agent certificate has EXPIRED"); got < 19 {
		t.Errorf("%d EXPIRED errors logged for 20 failures:\n%s", got, logs)
	}
	clock.mu.Lock()
	defer clock.mu.Unlock()
	if last := clock.waits[len(clock.waits)-1]; last != time.Minute {
		t.Errorf("retry wait after expiry %v, want MaxRetry", last)
	}
}

func TestRenewNowRefusesBadCertificates(t *testing.T) {
	ca := newTestCA(t)
	initial := issueAgent(t, ca, "node-1", time.Hour, time.Now())
	otherKey, _ := NewAgentKey()
	otherCSR, _ := NewCSR(otherKey, "node-1")
	server, _ := ca.LoadOrIssueServerCert(t.TempDir(), nil, time.Hour)
	for _, tc := range []struct {
		name  string
		renew RenewFunc
		want  string
	}{
		{"error", func(context.Context, *ecdsa.PrivateKey, []byte) ([]byte, error) {
			return nil, errors.New("unavailable")
		}, "unavailable"},
		{"garbage", func(context.Context, *ecdsa.PrivateKey, []byte) ([]byte, error) {
			return []byte("x"), nil
		}, "issued certificate"},
		{"other agent", func(_ context.Context, _ *ecdsa.PrivateKey, csr []byte) ([]byte, error) {
			return ca.SignAgentCSR(csr, "node-2", time.Hour)
		}, "not for agent"},
		{"server certificate", func(context.Context, *ecdsa.PrivateKey, []byte) ([]byte, error) {
			return server.Certificate[0], nil
		}, "not for agent"},
		{"other key", func(context.Context, *ecdsa.PrivateKey, []byte) ([]byte, error) {
			return ca.SignAgentCSR(otherCSR, "node-1", time.Hour)
		}, "another key"},
		{"expired", func(_ context.Context, _ *ecdsa.PrivateKey, csr []byte) ([]byte, error) {
			return ca.signAgentCSR(csr, "node-1", time.Hour, time.Now().Add(-3*time.Hour))
		}, "not valid now"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRenewer(initial, tc.renew, RenewerOptions{})
			err := r.RenewNow(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if !r.Leaf().Equal(initial.Leaf) {
				t.Fatal("bad certificate adopted")
			}
		})
	}
}

func TestRenewerSaveFailure(t *testing.T) {
	ca := newTestCA(t)
	initial := issueAgent(t, ca, "node-1", time.Hour, time.Now())
	notADir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notADir, nil, 0o600)
	r := NewRenewer(initial, func(_ context.Context, _ *ecdsa.PrivateKey, csr []byte) ([]byte, error) {
		return ca.SignAgentCSR(csr, "node-1", time.Hour)
	}, RenewerOptions{Dir: notADir})
	err := r.RenewNow(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not saved") {
		t.Fatalf("err = %v, want not saved", err)
	}
	if r.Leaf().Equal(initial.Leaf) {
		t.Error("renewed certificate not used although it could not be saved")
	}
}

func TestRenewerNotAgentCert(t *testing.T) {
	ca := newTestCA(t)
	server, _ := ca.LoadOrIssueServerCert(t.TempDir(), nil, time.Hour)
	server.Leaf = nil // parsed by NewRenewer
	r := NewRenewer(server, nil, RenewerOptions{})
	if err := r.Run(context.Background()); !errors.Is(err, ErrNotAgentCert) {
		t.Fatalf("Run = %v, want ErrNotAgentCert", err)
	}
	if err := NewRenewer(tls.Certificate{}, nil, RenewerOptions{}).Run(context.Background()); !errors.Is(err, ErrNotAgentCert) {
		t.Fatalf("empty certificate: Run = %v", err)
	}
}
