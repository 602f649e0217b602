package vaultdynamic

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"coffer/internal/keystore"
	"coffer/internal/keystore/vault/vaulttest"
	"coffer/internal/keystore/vaultdynamic/pgtest"
)

// Policy is what Coffer's token needs: read on the creds path, update on
// renew and revoke. The KV read is for the not-a-creds-endpoint case.
const Policy = `
path "database/creds/app" { capabilities = ["read"] }
path "database/creds/short" { capabilities = ["read"] }
path "database/creds/nope" { capabilities = ["read"] }
path "nothing/creds/app" { capabilities = ["read"] }
path "secret/data/*" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
`

type env struct {
	vs  *vaulttest.Server
	pg  *pgtest.Server
	is  *Issuer
	tok string
}

func setup(t *testing.T) *env {
	t.Helper()
	pg := pgtest.Start(t)
	vs := vaulttest.Start(t)
	pgtest.ConfigureVault(t, vs, pg, "app", "1h", "24h")
	pgtest.ConfigureVault(t, vs, pg, "short", "2s", "3s")
	vs.Policy(t, "coffer-dyn", Policy)
	tok := vs.Token(t, []string{"coffer-dyn"}, map[string]any{"ttl": "1h"})
	is := open(t, Config{Address: vs.Addr, TokenFile: vaulttest.WriteFile(t, "token", tok), MaxRetries: -1})
	return &env{vs: vs, pg: pg, is: is, tok: tok}
}

func open(t *testing.T, cfg Config) *Issuer {
	t.Helper()
	is, err := New(cfg, keystore.Options{Name: "vault-dynamic", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { is.Close() })
	return is
}

type creds struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func decode(t *testing.T, l keystore.Lease) creds {
	t.Helper()
	var c creds
	if err := json.Unmarshal(l.Value, &c); err != nil || c.Username == "" || c.Password == "" {
		t.Fatalf("lease value is not {username, password}: %v", err)
	}
	return c
}

func TestIssueRenewRevokeAgainstRealPostgres(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	a, err := e.is.Issue(ctx, "database/creds/app")
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.is.Issue(ctx, "database/creds/app")
	if err != nil {
		t.Fatal(err)
	}
	ca, cb := decode(t, a), decode(t, b)
	if roles := e.pg.Roles(t, pgtest.RolePrefix); !slices.Contains(roles, ca.Username) || !slices.Contains(roles, cb.Username) {
		t.Fatalf("roles %v lack the issued users", roles)
	}
	if a.ID == b.ID || ca.Username == cb.Username || ca.Password == cb.Password {
		t.Fatal("two issues gave the same lease or credentials")
	}
	if !strings.HasPrefix(a.ID, "database/creds/app/") || a.TTL != time.Hour || !a.Renewable {
		t.Fatalf("lease %s ttl %s renewable %v", a.ID, a.TTL, a.Renewable)
	}
	for _, c := range []creds{ca, cb} {
		if err := e.pg.CanLogin(c.Username, c.Password); err != nil {
			t.Fatalf("issued credentials do not log in: %v", err)
		}
	}
	ttl, err := e.is.Renew(ctx, a.ID, time.Hour)
	if err != nil || ttl <= 0 || ttl > time.Hour {
		t.Fatalf("renew: %s %v", ttl, err)
	}
	if err := e.is.Revoke(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.pg.CanLogin(ca.Username, ca.Password); err == nil {
		t.Fatal("revoked credentials still log in")
	}
	for _, r := range e.pg.Roles(t, pgtest.RolePrefix) {
		if r == ca.Username {
			t.Fatal("revoked role still exists")
		}
	}
	if err := e.pg.CanLogin(cb.Username, cb.Password); err != nil {
		t.Fatalf("the other lease's credentials stopped working: %v", err)
	}
	if err := e.is.Revoke(ctx, a.ID); err != nil {
		t.Fatalf("revoking a revoked lease: %v", err)
	}
	if _, err := e.is.Renew(ctx, a.ID, time.Hour); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("renewing a revoked lease: %v, want ErrNotFound", err)
	}
	a.Value.Zero()
	b.Value.Zero()
}

// A lease near its max TTL is renewed for less than asked: the caller sees
// it (and issues a new one).
func TestRenewCappedAtMaxTTL(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	l, err := e.is.Issue(ctx, "database/creds/short")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Value.Zero()
	if l.TTL != 2*time.Second {
		t.Fatalf("ttl %s", l.TTL)
	}
	time.Sleep(2200 * time.Millisecond)
	ttl, err := e.is.Renew(ctx, l.ID, 2*time.Second)
	if err == nil && ttl >= 2*time.Second {
		t.Fatalf("renewal near max_ttl gave %s", ttl)
	}
}

func TestIssueBadInput(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	if _, err := e.vs.Root.KVv2("secret").Put(ctx, "kv", map[string]any{"password": "kv-value-not-in-errors"}); err != nil {
		t.Fatal(err)
	}
	denied := open(t, Config{Address: e.vs.Addr, TokenFile: vaulttest.WriteFile(t, "t2", e.vs.Token(t, []string{"default"}, nil)), MaxRetries: -1})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	down := "http://" + ln.Addr().String()
	ln.Close()
	unreachable := open(t, Config{Address: down, TokenFile: vaulttest.WriteFile(t, "t3", e.tok), MaxRetries: -1})
	for _, c := range []struct {
		name string
		is   *Issuer
		item string
		want error
	}{
		{"unknown role", e.is, "database/creds/nope", keystore.ErrInvalidRef},
		{"nothing mounted", e.is, "nothing/creds/app", keystore.ErrNotFound},
		{"a KV secret is not a creds endpoint", e.is, "secret/data/kv", keystore.ErrInvalidRef},
		{"denied", denied, "database/creds/app", keystore.ErrAccessLost},
		{"unreachable", unreachable, "database/creds/app", keystore.ErrUnreachable},
		{"malformed", e.is, "database//creds", keystore.ErrInvalidRef},
		{"system path", e.is, "sys/leases/lookup", keystore.ErrInvalidRef},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.is.Issue(ctx, c.item)
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
			var ke *keystore.Error
			if !errors.As(err, &ke) || ke.Upstream != "vault-dynamic" || ke.Item != c.item {
				t.Fatalf("error does not name upstream and item: %v", err)
			}
			if strings.Contains(err.Error(), "kv-value-not-in-errors") {
				t.Fatal("value in error")
			}
		})
	}
	if roles := e.pg.Roles(t, pgtest.RolePrefix); len(roles) != 0 {
		t.Fatalf("bad input left roles behind: %v", roles)
	}
}

func TestValidateItem(t *testing.T) {
	is := &Issuer{name: "x"}
	for _, ok := range []string{"database/creds/app", "db-prod/creds/payments-ro", "aws/creds/deploy"} {
		if err := is.ValidateItem(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "app", "/database/creds/app", "database/creds/app/", "database/../sys", "database/creds/a b",
		"database/creds/a?x", "sys/leases/revoke", "auth/token/create", "cubbyhole/x", "identity/x", "database/creds/%2e"} {
		if err := is.ValidateItem(bad); !errors.Is(err, keystore.ErrInvalidRef) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestConfigRefusesKVMount(t *testing.T) {
	// kv_mount is not a key of this type: strict decoding refuses it
	// (tested through the builtin list in package builtin).
	c := &Config{Address: "http://127.0.0.1:1", TokenFile: "/x"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (&Config{Address: "http://vault.example:8200", TokenFile: "/x"}).Validate(); err == nil {
		t.Fatal("plain http to a non-loopback address accepted")
	}
	if err := (&Config{Address: "https://vault.example:8200"}).Validate(); err == nil {
		t.Fatal("no auth accepted")
	}
}

func FuzzValidateItem(f *testing.F) {
	for _, s := range []string{"database/creds/app", "sys/x", "a//b", "a/../b", "/a/b", "a/b/", "a b/c", "\x00/x"} {
		f.Add(s)
	}
	is := &Issuer{name: "x"}
	f.Fuzz(func(t *testing.T, item string) {
		if is.ValidateItem(item) != nil {
			return
		}
		for _, r := range item {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("accepted a control character in %q", item)
			}
		}
		segs := strings.Split(item, "/")
		if len(segs) < 2 || strings.ContainsAny(item, "?#%\\*+ ") || segs[0] == "sys" || segs[0] == "auth" {
			t.Fatalf("accepted %q", item)
		}
		for _, s := range segs {
			if s == "" || s == "." || s == ".." {
				t.Fatalf("accepted %q", item)
			}
		}
	})
}
