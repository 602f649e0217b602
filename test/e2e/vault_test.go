package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/internal/dockertest"
	"coffer/internal/keystore/vault/vaulttest"
	"coffer/test/testkit"
)

// A Vault KV v2 secret linked and bound is delivered into a real Docker
// container, follows a rotation in Vault, is removed when Vault deletes
// it, and every step is in the audit trail; the value never reaches the
// server's disk in clear, its logs, `docker inspect` or a CLI answer.
func TestVaultLinkedSecretInDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with Docker and Vault")
	}
	dockertest.Require(t)
	vs := vaulttest.Start(t)
	vs.Policy(t, "coffer-read", `
path "secret/data/payments/*" { capabilities = ["read"] }
path "secret/metadata/payments/*" { capabilities = ["read"] }
`)
	tokenFile := vaulttest.WriteFile(t, "vault-token", vs.Token(t, []string{"coffer-read"}, map[string]any{"ttl": "1h"})+"\n")
	cfg := filepath.Join(t.TempDir(), "coffer.yaml")
	if err := os.WriteFile(cfg, []byte(`keystores:
  vault:
    type: vault
    address: `+vs.Addr+`
    token_file: `+tokenFile+`
    kv_mount: secret
    poll_interval: 1s
`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kv := vs.Root.KVv2("secret")
	v1, v2 := "vault-v1-"+randID(), "vault-v2-"+randID()
	if _, err := kv.Put(ctx, "payments/db", map[string]any{"user": "app", "password": v1}); err != nil {
		t.Fatal(err)
	}

	s := newStack(t, "--config", cfg)
	s.srv.MustCLI(t, "", "secret", "link", "payments/db-password", "--from", "vault:payments/db#password")
	s.srv.MustCLI(t, "", "bind", "create", "vault-db", "--secret", "payments/db-password", "--selector", "app="+s.label, "--file", "db-password")
	c := s.run(dockertest.RunOpts{Labels: map[string]string{"app": s.label}})
	s.waitContent(c.ID, "db-password", v1)

	show := s.srv.MustCLI(t, "", "secret", "show", "payments/db-password")
	for _, want := range []string{"Linked:   vault:payments/db#password", "upstream version 1", "State:    ok"} {
		if !strings.Contains(show, want) {
			t.Fatalf("secret show lacks %q:\n%s", want, show)
		}
	}

	// Rotated in Vault: in the running container within the poll interval
	// plus delivery (bounded wait; the benchmark measures it).
	if _, err := kv.Put(ctx, "payments/db", map[string]any{"user": "app", "password": v2}); err != nil {
		t.Fatal(err)
	}
	s.waitContent(c.ID, "db-password", v2)
	s.eventually("the container holding upstream version 2", 10*time.Second, func() bool {
		out := s.srv.MustCLI(t, "", "secret", "show", "payments/db-password", "-o", "json")
		var m struct {
			Holders []struct {
				Upstream string `json:"upstream_version"`
				Pending  bool   `json:"pending"`
			} `json:"holders"`
		}
		json.Unmarshal([]byte(out), &m)
		return len(m.Holders) == 1 && m.Holders[0].Upstream == "2" && !m.Holders[0].Pending
	})

	// Vault sealed (unreachable): nothing is removed, the upstream shows
	// degraded. The current value is kept sealed in the server's store, so
	// even a server restarted during the outage serves a new container.
	vs.Seal(t)
	s.eventually("the upstream reported degraded", 15*time.Second, func() bool {
		return strings.Contains(s.srv.MustCLI(t, "", "keystore", "ls"), "degraded")
	})
	if got, ok := s.read(c.ID, "db-password"); !ok || got != v2 {
		t.Fatalf("an unreachable upstream changed the container's file: %q %v", got, ok)
	}
	s.srv.Stop()
	s.srv = testkit.StartServerAt(t, s.srv.Addr, s.srv.DataDir, "--config", cfg)
	late := s.run(dockertest.RunOpts{Labels: map[string]string{"app": s.label}})
	s.waitContent(late.ID, "db-password", v2)
	s.waitContent(c.ID, "db-password", v2)
	vs.Unseal(t)
	s.eventually("the upstream back to ok", 30*time.Second, func() bool {
		return !strings.Contains(s.srv.MustCLI(t, "", "keystore", "ls"), "degraded")
	})

	// Writes through Coffer are refused.
	if _, errOut, code := s.srv.CLI(t, "x", "secret", "put", "payments/db-password"); code != 6 || !strings.Contains(errOut, "linked to vault:payments/db#password") {
		t.Fatalf("put on a linked secret: exit %d: %s", code, errOut)
	}

	// Deleted in Vault (every version and the metadata): gone from the container.
	if err := kv.DeleteMetadata(ctx, "payments/db"); err != nil {
		t.Fatal(err)
	}
	s.waitAbsent(c.ID, "db-password")
	s.waitAbsent(late.ID, "db-password")
	show = s.srv.MustCLI(t, "", "secret", "show", "payments/db-password")
	if !strings.Contains(show, "revoked") || !strings.Contains(show, "not found") {
		t.Fatalf("secret show after deletion upstream:\n%s", show)
	}

	// The audit trail has the link, the sync, the revocation and the
	// deliveries (delivery records are committed shortly after the ack).
	var audit string
	s.eventually("the revocation's delivery records", 10*time.Second, func() bool {
		audit = s.srv.MustCLI(t, "", "audit", "ls", "-o", "json")
		return strings.Contains(audit, `"delivery.revoke"`)
	})
	for _, want := range []string{`"secret.link"`, `"secret.sync"`, `"secret.revoke"`, `"keystore:vault"`, `"delivery.send"`, `"delivery.revoke"`} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit trail lacks %s", want)
		}
	}
	s.srv.MustCLI(t, "", "audit", "verify")

	// Unlinked: gone; the name is free again.
	s.srv.MustCLI(t, "", "secret", "unlink", "payments/db-password")
	if _, _, code := s.srv.CLI(t, "", "secret", "show", "payments/db-password"); code != 3 {
		t.Fatalf("secret show after unlink: exit %d, want 3 (not found)", code)
	}

	// The values were nowhere they must not be.
	inspect, _ := s.docker.Docker(t, "inspect", c.ID)
	for _, v := range []string{v1, v2} {
		if strings.Contains(inspect, v) {
			t.Errorf("value in docker inspect")
		}
		if strings.Contains(s.srv.Logs(), v) || strings.Contains(s.agent.Logs(), v) || strings.Contains(audit, v) || strings.Contains(show, v) {
			t.Errorf("value in logs, audit or CLI output")
		}
		if hits := grepTree(s.dir, v); len(hits) > 0 {
			t.Errorf("value in clear on disk: %v", hits)
		}
	}
}
