package authn

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"coffer/internal/authz"
	"coffer/internal/store/bolt"
)

func newTokens(t *testing.T) (*Tokens, *bolt.Backend) {
	t.Helper()
	b, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	tk, err := NewTokens(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	return tk, b
}

func TestTokenLifecycle(t *testing.T) {
	ctx := context.Background()
	tk, st := newTokens(t)
	plain, rec, err := tk.Create(ctx, CreateOptions{Role: authz.Operator, Scope: "payments/*", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(plain, "coffer_") || rec.Scope != "payments/" {
		t.Fatalf("token %q scope %q", plain[:8], rec.Scope)
	}
	got, err := tk.Authenticate(plain)
	if err != nil || got.ID != rec.ID {
		t.Fatalf("Authenticate = %v, %v", got.ID, err)
	}
	// Reloaded from the store: still valid.
	tk2, err := NewTokens(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk2.Authenticate(plain); err != nil {
		t.Fatalf("after reload: %v", err)
	}
	for _, bad := range []string{"", "coffer_", plain + "x", plain[:len(plain)-2] + "AA", "Bearer " + plain, strings.Replace(plain, rec.ID, "0000000000000000", 1)} {
		if _, err := tk.Authenticate(bad); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("Authenticate(bad) = %v", err)
		}
	}
	if err := tk.Revoke(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Authenticate(plain); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("revoked token accepted: %v", err)
	}
	if err := tk.Revoke(ctx, rec.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second revoke = %v", err)
	}
}

func TestExpiry(t *testing.T) {
	tk, _ := newTokens(t)
	now := time.Now()
	tk.now = func() time.Time { return now }
	plain, _, err := tk.Create(context.Background(), CreateOptions{Role: authz.Viewer, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	if _, err := tk.Authenticate(plain); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("expired token accepted: %v", err)
	}
}

func TestJoinTokenIsOneTime(t *testing.T) {
	ctx := context.Background()
	tk, _ := newTokens(t)
	plain, rec, err := tk.Create(ctx, CreateOptions{Role: authz.Agent})
	if err != nil {
		t.Fatal(err)
	}
	if !rec.OneTime || rec.Expires.IsZero() {
		t.Fatalf("join token not one-time with ttl: %+v", rec)
	}
	if _, err := tk.Authenticate(plain); err == nil {
		t.Fatal("join token accepted as a person's token")
	}
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if _, err := tk.ConsumeJoin(ctx, plain); err == nil {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("join token consumed %d times", ok.Load())
	}
	if _, _, err := tk.Create(ctx, CreateOptions{Role: authz.Agent, TTL: 30 * 24 * time.Hour}); err == nil {
		t.Fatal("30-day join token accepted")
	}
}

func TestBootstrap(t *testing.T) {
	ctx := context.Background()
	tk, _ := newTokens(t)
	p := filepath.Join(t.TempDir(), "admin.token")
	made, err := tk.Bootstrap(ctx, p)
	if err != nil || !made {
		t.Fatalf("Bootstrap = %v, %v", made, err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token mode %v, %v", fi.Mode(), err)
	}
	b, _ := os.ReadFile(p)
	rec, err := tk.Authenticate(string(b))
	if err != nil || rec.Role != authz.Admin {
		t.Fatalf("bootstrap token: %v %v", rec.Role, err)
	}
	if made, _ := tk.Bootstrap(ctx, p); made {
		t.Fatal("second bootstrap made a token")
	}
}

func TestJoinTokenAgentLabels(t *testing.T) {
	ctx := context.Background()
	tk, st := newTokens(t)
	labels := map[string]string{"env": "prod", "zone": "eu-1"}
	plain, rec, err := tk.Create(ctx, CreateOptions{Role: authz.Agent, Scope: "payments/*", AgentLabels: labels})
	if err != nil {
		t.Fatal(err)
	}
	labels["env"] = "changed-by-caller"
	if rec.AgentLabels["env"] != "prod" || rec.Scope != "payments/" {
		t.Fatalf("record = %+v", rec)
	}
	// Kept in the store.
	tk2, err := NewTokens(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	// CheckJoin does not spend the token; ConsumeJoin does, once.
	for range 2 {
		got, err := tk2.CheckJoin(plain)
		if err != nil || got.AgentLabels["zone"] != "eu-1" || got.Scope != "payments/" {
			t.Fatalf("CheckJoin = %+v, %v", got, err)
		}
	}
	got, err := tk2.ConsumeJoin(ctx, plain)
	if err != nil || got.AgentLabels["env"] != "prod" {
		t.Fatalf("ConsumeJoin = %+v, %v", got, err)
	}
	if _, err := tk2.ConsumeJoin(ctx, plain); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("labelled join token used twice: %v", err)
	}
	if _, err := tk2.CheckJoin(plain); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("CheckJoin of a used token = %v", err)
	}
	// A person's token is no join token, for CheckJoin either.
	admin, _, _ := tk2.Create(ctx, CreateOptions{Role: authz.Admin})
	if _, err := tk2.CheckJoin(admin); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("CheckJoin(admin token) = %v", err)
	}
}

func TestCreateRefusesBadAgentLabels(t *testing.T) {
	tk, _ := newTokens(t)
	tests := []struct {
		desc  string
		o     CreateOptions
		inMsg string
	}{
		{"labels on a person's token", CreateOptions{Role: authz.Operator, AgentLabels: map[string]string{"env": "prod"}}, "role agent"},
		{"bad key", CreateOptions{Role: authz.Agent, AgentLabels: map[string]string{"bad key!": "x"}}, `"bad key!"`},
		{"bad value", CreateOptions{Role: authz.Agent, AgentLabels: map[string]string{"env": "pr od"}}, `"env"`},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			_, _, err := tk.Create(context.Background(), tt.o)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.inMsg) {
				t.Fatalf("Create = %v, want ErrInvalid naming %s", err, tt.inMsg)
			}
		})
	}
	if n := len(tk.List()); n != 0 {
		t.Fatalf("refused options made %d tokens", n)
	}
}
