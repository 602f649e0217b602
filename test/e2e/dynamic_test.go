package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"coffer/internal/dockertest"
	"coffer/internal/keystore/vault/vaulttest"
	"coffer/internal/keystore/vaultdynamic/pgtest"
)

// A secret linked to Vault's database secrets engine gives each of three
// real Docker containers its own PostgreSQL user (a lease each); stopping
// one revokes its lease at Vault, which drops its user within 2 s, while
// the others keep working; every lease is in the audit trail with its
// container, and no credential is in a log, the audit trail or a CLI
// answer.
func TestDynamicDatabaseCredentialsPerContainer(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with Docker, Vault and PostgreSQL")
	}
	dockertest.Require(t)
	pg := pgtest.Start(t)
	vs := vaulttest.Start(t)
	pgtest.ConfigureVault(t, vs, pg, "app", "1h", "24h")
	vs.Policy(t, "coffer-dynamic", `
path "database/creds/app" { capabilities = ["read"] }
path "database/creds/nope" { capabilities = ["read"] }
path "secret/data/*" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
`)
	tokenFile := vaulttest.WriteFile(t, "vault-token", vs.Token(t, []string{"coffer-dynamic"}, map[string]any{"ttl": "1h"})+"\n")
	cfg := filepath.Join(t.TempDir(), "coffer.yaml")
	if err := os.WriteFile(cfg, []byte(`keystores:
  vault-dynamic:
    type: vault-dynamic
    address: `+vs.Addr+`
    token_file: `+tokenFile+`
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := vs.Root.KVv2("secret").Put(t.Context(), "kv", map[string]any{"password": "kv-value"}); err != nil {
		t.Fatal(err)
	}

	s := newStack(t, "--config", cfg)

	// Bad input: a clear error naming the upstream and the item; nothing
	// changed (no secret, no database user left behind).
	for from, want := range map[string]string{
		"vault-dynamic:database/creds/nope":      `keystore vault-dynamic: item "database/creds/nope"`,
		"vault-dynamic:secret/data/kv":           "does not issue credentials",
		"vault-dynamic:database/creds/app#nokey": `item "database/creds/app": no such key`,
	} {
		_, errOut, code := s.srv.CLI(t, "", "secret", "link", "payments/db", "--from", from)
		if code == 0 || !strings.Contains(errOut, want) || strings.Contains(errOut, "kv-value") {
			t.Fatalf("link --from %s: exit %d: %s (want %q)", from, code, errOut, want)
		}
	}
	if _, _, code := s.srv.CLI(t, "", "secret", "show", "payments/db"); code == 0 {
		t.Fatal("a refused link created the secret")
	}
	if roles := pg.Roles(t, pgtest.RolePrefix); len(roles) != 0 {
		t.Fatalf("link checks left database users: %v", roles)
	}

	s.srv.MustCLI(t, "", "secret", "link", "payments/db", "--from", "vault-dynamic:database/creds/app")
	s.srv.MustCLI(t, "", "bind", "create", "dyn-db", "--secret", "payments/db", "--selector", "app="+s.label, "--file", "db.json")
	var ctrs []dockertest.ContainerRef
	for range 3 {
		ctrs = append(ctrs, s.run(dockertest.RunOpts{Labels: map[string]string{"app": s.label}}))
	}
	type creds struct{ Username, Password string }
	got := map[string]creds{} // by container id
	for _, c := range ctrs {
		s.eventually("credentials in "+c.ID[:12], 20*time.Second, func() bool {
			out, ok := s.read(c.ID, "db.json")
			var cr creds
			if !ok || json.Unmarshal([]byte(out), &cr) != nil || cr.Username == "" || cr.Password == "" {
				return false
			}
			got[c.ID] = cr
			return true
		})
	}
	users := map[string]bool{}
	for id, cr := range got {
		users[cr.Username] = true
		if err := pg.CanLogin(cr.Username, cr.Password); err != nil {
			t.Fatalf("container %s's credentials do not log in: %v", id[:12], err)
		}
	}
	if len(users) != 3 {
		t.Fatalf("%d distinct database users for 3 containers", len(users))
	}
	if roles := pg.Roles(t, pgtest.RolePrefix); len(roles) != 3 {
		t.Fatalf("database users %v, want 3", roles)
	}

	// secret show: three holders, none pending, each with its own lease.
	s.eventually("three holders up to date", 15*time.Second, func() bool {
		out := s.srv.MustCLI(t, "", "secret", "show", "payments/db", "-o", "json")
		var m struct {
			Link    struct{ Dynamic bool } `json:"link"`
			Pending int                    `json:"pending"`
			Holders []struct {
				Lease   string `json:"upstream_version"`
				Pending bool   `json:"pending"`
			} `json:"holders"`
		}
		json.Unmarshal([]byte(out), &m)
		leases := map[string]bool{}
		for _, h := range m.Holders {
			if !h.Pending && strings.HasPrefix(h.Lease, "database/creds/app/") {
				leases[h.Lease] = true
			}
		}
		return m.Link.Dynamic && m.Pending == 0 && len(leases) == 3
	})

	show := s.srv.MustCLI(t, "", "secret", "show", "payments/db")
	for _, want := range []string{"Linked:   vault-dynamic:database/creds/app", "dynamic: each container gets its own lease", "State:    ok", "LEASE", "database/creds/app/"} {
		if !strings.Contains(show, want) {
			t.Fatalf("secret show lacks %q:\n%s", want, show)
		}
	}

	// Values cannot be written through Coffer.
	if _, errOut, code := s.srv.CLI(t, "x", "secret", "put", "payments/db"); code != 6 || !strings.Contains(errOut, "linked to vault-dynamic:database/creds/app") {
		t.Fatalf("put on a dynamic secret: exit %d: %s", code, errOut)
	}

	// One container stops: its user is gone within 2 s; the others work.
	stopped := ctrs[0]
	if _, err := s.docker.Docker(t, "kill", stopped.ID); err != nil {
		t.Fatal(err)
	}
	gone := got[stopped.ID].Username
	deadline := time.Now().Add(2 * time.Second)
	for slices.Contains(pg.Roles(t, pgtest.RolePrefix), gone) {
		if time.Now().After(deadline) {
			t.Fatalf("the stopped container's database user still exists 2 s after it stopped\nserver logs:\n%s", tail(s.srv.Logs()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := pg.CanLogin(gone, got[stopped.ID].Password); err == nil {
		t.Fatal("the stopped container's credentials still log in")
	}
	for _, c := range ctrs[1:] {
		if err := pg.CanLogin(got[c.ID].Username, got[c.ID].Password); err != nil {
			t.Fatalf("a running container's credentials stopped working: %v", err)
		}
	}

	// The audit trail ties each lease to its container.
	s.eventually("lease.revoke audited", 10*time.Second, func() bool {
		return strings.Contains(s.srv.MustCLI(t, "", "audit", "ls", "-o", "json"), `"lease.revoke"`)
	})
	auditOut := s.srv.MustCLI(t, "", "audit", "ls", "-o", "json")
	var events []struct {
		Action  string            `json:"action"`
		Result  string            `json:"result"`
		Details map[string]string `json:"details"`
	}
	if err := json.Unmarshal([]byte(auditOut), &events); err != nil {
		t.Fatal(err)
	}
	issued := map[string]string{} // container id → lease id
	var revoked []map[string]string
	for _, e := range events {
		switch {
		case e.Action == "lease.issue" && e.Result == "ok":
			if e.Details["agent"] != "e2e-host" || e.Details["container"] == "" || e.Details["lease_id"] == "" || e.Details["secret"] != "payments/db" {
				t.Fatalf("lease.issue record: %+v", e.Details)
			}
			issued[e.Details["container_id"]] = e.Details["lease_id"]
		case e.Action == "lease.revoke":
			revoked = append(revoked, e.Details)
		}
	}
	for _, c := range ctrs {
		if issued[c.ID] == "" {
			t.Fatalf("no lease.issue record for container %s", c.ID[:12])
		}
	}
	if len(revoked) != 1 || revoked[0]["container_id"] != stopped.ID || revoked[0]["lease_id"] != issued[stopped.ID] ||
		revoked[0]["reason"] != "container stopped" || revoked[0]["container"] != stopped.Name {
		t.Fatalf("lease.revoke records: %+v (want the stopped container's lease %s)", revoked, issued[stopped.ID])
	}

	// Unlinked: every remaining lease revoked, the users gone.
	s.srv.MustCLI(t, "", "secret", "unlink", "payments/db")
	s.eventually("every database user gone after unlink", 10*time.Second, func() bool {
		return len(pg.Roles(t, pgtest.RolePrefix)) == 0
	})
	for _, c := range ctrs[1:] {
		s.waitAbsent(c.ID, "db.json")
	}
	s.srv.MustCLI(t, "", "audit", "verify")

	// The credentials were nowhere they must not be.
	auditOut = s.srv.MustCLI(t, "", "audit", "ls", "-o", "json")
	show += s.srv.MustCLI(t, "", "keystore", "ls")
	for _, cr := range got {
		for where, text := range map[string]string{"server logs": s.srv.Logs(), "agent logs": s.agent.Logs(), "audit": auditOut, "CLI": show} {
			if strings.Contains(text, cr.Password) {
				t.Errorf("a password in the %s", where)
			}
		}
		if hits := grepTree(s.dir, cr.Password); len(hits) > 0 {
			t.Errorf("a password in clear on disk: %v", hits)
		}
	}
}
