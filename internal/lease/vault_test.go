package lease

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"coffer/internal/audit"
	"coffer/internal/broker"
	"coffer/internal/keystore"
	"coffer/internal/keystore/vault/vaulttest"
	"coffer/internal/keystore/vaultdynamic"
	"coffer/internal/keystore/vaultdynamic/pgtest"
)

// Against a real Vault and PostgreSQL: a lease of 2 s TTL and 5 s max TTL
// is renewed, then replaced near its max TTL (a new database user for
// that container, the old one dropped after the grace), and revoked when
// released.
func TestRealVaultRenewRotateRevoke(t *testing.T) {
	pg := pgtest.Start(t)
	vs := vaulttest.Start(t)
	pgtest.ConfigureVault(t, vs, pg, "app", "2s", "5s")
	vs.Policy(t, "coffer-dyn", `
path "database/creds/app" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
`)
	tok := vs.Token(t, []string{"coffer-dyn"}, map[string]any{"ttl": "1h"})
	is, err := vaultdynamic.New(vaultdynamic.Config{Address: vs.Addr, TokenFile: vaulttest.WriteFile(t, "token", tok), MaxRetries: -1},
		keystore.Options{Name: "dyn", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	f := setup(t, nil, func(c *Config) {
		c.Issuers = keystore.Issuers{"dyn": is}
		c.RotateGrace = 300 * time.Millisecond
	})
	type creds struct{ Username, Password string }
	lease := func() (uint64, creds) {
		v, val := f.waitLease(t, "c1", "payments/db")
		var c creds
		if err := json.Unmarshal([]byte(val), &c); err != nil {
			t.Fatal(err)
		}
		return v, c
	}
	v1, c1 := lease()
	if err := pg.CanLogin(c1.Username, c1.Password); err != nil {
		t.Fatal(err)
	}
	// Past the first TTL, the lease was renewed: the user still logs in.
	time.Sleep(2500 * time.Millisecond)
	if v, _ := f.m.Peek("c1", "payments/db"); v == v1 {
		if err := pg.CanLogin(c1.Username, c1.Password); err != nil {
			t.Fatalf("not renewed: %v", err)
		}
	}
	eventually2(t, 15*time.Second, "a rotation near the max TTL", func() bool { v, _ := f.m.Peek("c1", "payments/db"); return v != v1 })
	_, c2 := lease()
	if c2.Username == c1.Username {
		t.Fatal("the rotation kept the user")
	}
	if err := pg.CanLogin(c2.Username, c2.Password); err != nil {
		t.Fatal(err)
	}
	eventually2(t, 10*time.Second, "the replaced user dropped", func() bool { return !slices.Contains(pg.Roles(t, pgtest.RolePrefix), c1.Username) })

	f.m.Release("c1", "payments/db", broker.ReleaseStopped)
	eventually2(t, 10*time.Second, "the released user dropped", func() bool { return len(pg.Roles(t, pgtest.RolePrefix)) == 0 })
	if f.aud.count("lease.revoke", audit.ResultOK) < 2 || f.aud.count("lease.issue", audit.ResultOK) < 2 {
		t.Fatal("issues and revocations not audited")
	}
	f.aud.mu.Lock()
	for _, e := range f.aud.ev {
		b, _ := json.Marshal(e)
		if strings.Contains(string(b), c1.Password) || strings.Contains(string(b), c2.Password) {
			t.Error("a password in the audit trail")
		}
	}
	f.aud.mu.Unlock()
}

func eventually2(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
