package ha

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"coffer/internal/keystore/vault/vaulttest"
	"coffer/internal/seal"
	"coffer/test/testkit"
)

// The master key in Vault Transit, on etcd: the first server initializes
// the prefix with the Transit key; a second server joins with nothing but
// the etcd endpoints and its access to Transit (no key file anywhere), and
// serves what was written through the first. A server given a key file
// instead, or another Transit key, is refused at start.
func TestTransitSealedServersOnEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, Vault and coffer-server processes")
	}
	v := vaulttest.Start(t)
	if err := v.Root.Sys().Mount("transit", &api.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	conf := map[string]string{}
	for _, k := range []string{"coffer-kek", "other-kek"} {
		if _, err := v.Root.Logical().Write("transit/keys/"+k, map[string]any{"type": "aes256-gcm96"}); err != nil {
			t.Fatal(err)
		}
		v.Policy(t, "use-"+k, strings.ReplaceAll(`
path "transit/encrypt/KEY" { capabilities = ["update"] }
path "transit/decrypt/KEY" { capabilities = ["update"] }
`, "KEY", k))
		tok := vaulttest.WriteFile(t, k+".token", v.Token(t, []string{"use-" + k}, map[string]any{"ttl": "1h"}))
		conf[k] = filepath.Join(t.TempDir(), k+".yaml")
		yaml := "seal:\n  type: vault-transit\n  address: " + v.Addr + "\n  token_file: " + tok + "\n  key: " + k + "\n"
		if err := os.WriteFile(conf[k], []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := newClusterKey(t, 2, false, "--config", conf["coffer-kek"])
	for i, s := range c.servers {
		if _, err := os.Stat(filepath.Join(s.dataDir, "master.key")); err == nil {
			t.Fatalf("server %d has a master key file", i)
		}
	}
	c.put(0, "app/db", "v1")
	c.bind(0, "web-db", "app/db", "app=web")
	a := c.startAgent("node-b", 1, c.servers[1].addr)
	a.startContainer("c1", map[string]string{"app": "web"})
	waitValue(t, a, "c1", "db", "v1", 10*time.Second)
	c.put(1, "app/db", "v2")
	waitValue(t, a, "c1", "db", "v2", 2*time.Second)

	// Joining with the wrong master key access is refused, nothing written.
	key := filepath.Join(t.TempDir(), "master.key")
	if _, err := seal.CreateKeyFile(key); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{
		"a key file":          {"--master-key-file", key},
		"another Transit key": {"--config", conf["other-kek"]},
	} {
		dir := filepath.Join(t.TempDir(), "joiner")
		p := testkit.Start(t, testkit.Bin(t, "coffer-server"), append([]string{"--store", "etcd", "--etcd-endpoints", strings.Join(c.etcd.Endpoints(), ","),
			"--etcd-prefix", "ha", "--data-dir", dir, "--listen", testkit.FreeAddr(t)}, args...)...)
		waitFor(t, 30*time.Second, "the server with "+name+" to exit", p.Exited)
		if !strings.Contains(p.Logs(), "sealed with master key vault-transit:transit/coffer-kek") {
			t.Fatalf("a server joining with %s: %s", name, p.Logs())
		}
	}
	var servers struct {
		Servers []struct {
			ID string `json:"id"`
		} `json:"servers"`
	}
	c.must(0, "GET", "/v1/audit/servers", nil, &servers)
	if len(servers.Servers) != 2 {
		t.Fatalf("the refused servers registered themselves: %+v", servers)
	}
}
