package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"coffer/internal/catalog"
	"coffer/internal/keystore/vault/vaulttest"
	"coffer/internal/seal/transit"
	"coffer/internal/store/bolt"
)

const transitPolicy = `
path "transit/encrypt/KEY" { capabilities = ["update"] }
path "transit/decrypt/KEY" { capabilities = ["update"] }
path "transit/rewrap/KEY"  { capabilities = ["update"] }
`

// transitVault starts a real Vault dev server with Transit and the named
// keys, each usable with its own token.
func transitVault(t *testing.T, keys ...string) (*vaulttest.Server, map[string]transit.Config) {
	t.Helper()
	v := vaulttest.Start(t)
	if err := v.Root.Sys().Mount("transit", &api.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	cfgs := map[string]transit.Config{}
	for _, k := range keys {
		if _, err := v.Root.Logical().Write("transit/keys/"+k, map[string]any{"type": "aes256-gcm96"}); err != nil {
			t.Fatal(err)
		}
		v.Policy(t, "use-"+k, strings.ReplaceAll(transitPolicy, "KEY", k))
		tok := v.Token(t, []string{"use-" + k}, map[string]any{"ttl": "1h"})
		cfgs[k] = transit.Config{Address: v.Addr, TokenFile: vaulttest.WriteFile(t, k+".token", tok), Key: k, MaxRetries: -1}
	}
	return v, cfgs
}

func transitSeal(c transit.Config) SealConfig {
	return SealConfig{Type: SealVaultTransit, Transit: &c}
}

// startStop opens a server on dataDir with seal, runs it briefly and stops it.
func startStop(t *testing.T, dataDir string, sc SealConfig) error {
	t.Helper()
	cfg := Defaults()
	cfg.DataDir, cfg.Listen, cfg.Seal = dataDir, "127.0.0.1:0", sc
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := New(ctx, cfg, nil)
	if err != nil {
		return err
	}
	cancel()
	return s.Run(ctx)
}

func storeStatus(t *testing.T, dataDir string) (map[string]int, string) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(dataDir, storeFile))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	counts, canary, err := catalog.SealStatus(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	return counts, canary
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// noMasterKeyFile fails if any file in dir could be a local master key.
func noMasterKeyFile(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if strings.Contains(d.Name(), "master") || fi.Size() == 32 {
			t.Errorf("%s looks like a master key file", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSealVaultTransit(t *testing.T) {
	v, keys := transitVault(t, "coffer-kek", "other-kek")
	dir := filepath.Join(t.TempDir(), "data")
	if err := startStop(t, dir, transitSeal(keys["coffer-kek"])); err != nil {
		t.Fatal(err)
	}
	noMasterKeyFile(t, dir)
	counts, canary := storeStatus(t, dir)
	if canary != "vault-transit:transit/coffer-kek" || len(counts) != 1 || counts[canary] < 2 {
		t.Fatalf("store sealed as %v, canary %s", counts, canary)
	}
	// Starts again with the same key.
	if err := startStop(t, dir, transitSeal(keys["coffer-kek"])); err != nil {
		t.Fatal(err)
	}
	sum := fileSum(t, filepath.Join(dir, storeFile))
	// Another master key: a clear error, nothing changed, no key file made.
	for name, sc := range map[string]SealConfig{
		"local":           {Type: SealLocal},
		"other transit":   transitSeal(keys["other-kek"]),
		"previous absent": {Type: SealVaultTransit, Transit: ptr(keys["other-kek"]), Previous: []SealConfig{transitSeal(keys["other-kek"])}},
	} {
		t.Run(name, func(t *testing.T) {
			err := startStop(t, dir, sc)
			if err == nil {
				t.Fatal("started")
			}
			if name != "previous absent" && (!strings.Contains(err.Error(), "sealed with master key vault-transit:transit/coffer-kek") || !strings.Contains(err.Error(), "nothing was changed")) {
				t.Fatalf("error = %v", err)
			}
			noMasterKeyFile(t, dir)
			if fileSum(t, filepath.Join(dir, storeFile)) != sum {
				t.Fatal("store changed")
			}
		})
	}

	// Vault Transit's own rewrap after a key rotation, then old versions retired.
	if _, err := v.Root.Logical().Write("transit/keys/coffer-kek/rotate", nil); err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.DataDir, cfg.Seal = dir, transitSeal(keys["coffer-kek"])
	stats, counts, err := RewrapStore(context.Background(), cfg, true, nil)
	if err != nil || stats.InPlace != counts["vault-transit:transit/coffer-kek"] || stats.InPlace < 2 {
		t.Fatalf("in-place rewrap: %+v %v, %v", stats, counts, err)
	}
	if _, err := v.Root.Logical().Write("transit/keys/coffer-kek/config", map[string]any{"min_decryption_version": 2}); err != nil {
		t.Fatal(err)
	}
	if err := startStop(t, dir, transitSeal(keys["coffer-kek"])); err != nil {
		t.Fatalf("start after rotation, rewrap and min_decryption_version 2: %v", err)
	}
	// Again: nothing left to do.
	if stats, _, err := RewrapStore(context.Background(), cfg, true, nil); err != nil || stats.InPlace != 0 || stats.Unchanged < 2 {
		t.Fatalf("second in-place rewrap: %+v, %v", stats, err)
	}

	// From one Transit key to another.
	cfg.Seal = transitSeal(keys["other-kek"])
	cfg.Seal.Previous = []SealConfig{transitSeal(keys["coffer-kek"])}
	stats, counts, err = RewrapStore(context.Background(), cfg, false, nil)
	if err != nil || len(counts) != 1 || counts["vault-transit:transit/other-kek"] != stats.Moved {
		t.Fatalf("transit to transit: %+v %v, %v", stats, counts, err)
	}
	if err := startStop(t, dir, transitSeal(keys["other-kek"])); err != nil {
		t.Fatalf("start with the new Transit key only: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestSealLocalStoreRefusesKMS(t *testing.T) {
	_, keys := transitVault(t, "coffer-kek")
	dir := filepath.Join(t.TempDir(), "data")
	if err := startStop(t, dir, SealConfig{Type: SealLocal}); err != nil {
		t.Fatal(err)
	}
	sum, keySum := fileSum(t, filepath.Join(dir, storeFile)), fileSum(t, filepath.Join(dir, "master.key"))
	err := startStop(t, dir, transitSeal(keys["coffer-kek"]))
	if err == nil || !strings.Contains(err.Error(), "(a local master key file), but the server is configured with vault-transit:transit/coffer-kek") {
		t.Fatalf("error = %v", err)
	}
	if fileSum(t, filepath.Join(dir, storeFile)) != sum || fileSum(t, filepath.Join(dir, "master.key")) != keySum {
		t.Fatal("store or key file changed")
	}
}

func TestSealKMSUnreachable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	tok := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(tok, []byte("s.nothing"), 0o600)
	err := startStop(t, dir, transitSeal(transit.Config{Address: "http://127.0.0.1:1", TokenFile: tok, Key: "k", MaxRetries: -1}))
	if err == nil || !strings.Contains(err.Error(), "master key (seal type vault-transit)") {
		t.Fatalf("error = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, storeFile)); err == nil {
		t.Fatal("store created")
	}
	noMasterKeyFile(t, dir)
	if b, _ := os.ReadFile(tok); !bytes.Equal(b, []byte("s.nothing")) {
		t.Fatal("token file changed")
	}
}
