// Package sealrewrap tests moving a store's master key with real processes:
// a coffer-server that keeps serving while it rewraps its store from the
// local key file to a Vault Transit key (a real Vault dev server), and the
// coffer-server rewrap command.
package sealrewrap

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"coffer/internal/catalog"
	"coffer/internal/keystore/vault/vaulttest"
	"coffer/internal/seal/transit"
	"coffer/internal/store/bolt"
	"coffer/test/testkit"
)

func writeFile(t *testing.T, path, s string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func waitLog(t *testing.T, p *testkit.Server, want string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.Logs(), want) {
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("no %q in the server's log:\n%s", want, p.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRewrapLocalToTransitWhileServing(t *testing.T) {
	v := vaulttest.Start(t)
	if err := v.Root.Sys().Mount("transit", &api.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Root.Logical().Write("transit/keys/coffer-kek", map[string]any{"type": "aes256-gcm96"}); err != nil {
		t.Fatal(err)
	}
	v.Policy(t, "coffer-seal", `
path "transit/encrypt/coffer-kek" { capabilities = ["update"] }
path "transit/decrypt/coffer-kek" { capabilities = ["update"] }
path "transit/rewrap/coffer-kek"  { capabilities = ["update"] }
`)
	tok := vaulttest.WriteFile(t, "vault.token", v.Token(t, []string{"coffer-seal"}, map[string]any{"ttl": "1h"}))

	work := t.TempDir()
	dataDir := filepath.Join(work, "data")
	keyFile := filepath.Join(dataDir, "master.key")
	sealYAML := fmt.Sprintf("seal:\n  type: vault-transit\n  address: %s\n  token_file: %s\n  key: coffer-kek\n", v.Addr, tok)
	moving := writeFile(t, filepath.Join(work, "moving.yaml"), sealYAML+fmt.Sprintf("  previous:\n    - type: local\n      master_key_file: %s\n", keyFile))
	final := writeFile(t, filepath.Join(work, "transit.yaml"), sealYAML)

	// A store sealed with the local key file: 12 secrets, 3 versions each.
	addr := testkit.FreeAddr(t)
	srv := testkit.StartServerAt(t, addr, dataDir)
	want := map[string]string{} // "name@version" -> value
	var mu sync.Mutex
	put := func(s *testkit.Server, name, value string) error {
		out, errOut, code := s.CLI(t, value, "secret", "put", name)
		if code != 0 {
			return fmt.Errorf("secret put %s: exit %d: %s%s", name, code, out, errOut)
		}
		meta, errOut, code := s.CLI(t, "", "secret", "show", name, "-o", "json")
		if code != 0 {
			return fmt.Errorf("secret show %s: %s", name, errOut)
		}
		var cur int
		if i := strings.Index(meta, `"current_version":`); i >= 0 {
			fmt.Sscan(strings.TrimLeft(meta[i+len(`"current_version":`):], " "), &cur)
		}
		mu.Lock()
		want[fmt.Sprintf("%s@%d", name, cur)] = value
		mu.Unlock()
		return nil
	}
	for i := range 12 {
		for ver := range 3 {
			if err := put(srv, fmt.Sprintf("app/s%02d", i), fmt.Sprintf("local-%d-%d", i, ver)); err != nil {
				t.Fatal(err)
			}
		}
	}
	srv.Stop()

	// Restarted with Transit as the master key and the key file as the
	// previous one: it serves at once and rewraps in the background while
	// a client keeps reading metadata and putting versions.
	srv = testkit.StartServerAt(t, addr, dataDir, "--config", moving)
	var ops atomic.Int64
	var errs []error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("app/s%02d", (i*2+w)%12)
				if _, errOut, code := srv.CLI(t, "", "secret", "ls"); code != 0 {
					mu.Lock()
					errs = append(errs, fmt.Errorf("secret ls: %s", errOut))
					mu.Unlock()
				}
				if err := put(srv, name, fmt.Sprintf("transit-%d-%d", w, i)); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
				ops.Add(1)
			}
		}()
	}
	waitLog(t, srv, "rewrap complete")
	for ops.Load() < 6 { // and keeps serving after it
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if strings.Contains(srv.Logs(), "rewrap failed") {
		t.Errorf("rewrap failed on the way:\n%s", srv.Logs())
	}
	srv.Stop()

	// The command agrees: nothing left under the old key.
	out, err := exec.Command(testkit.Bin(t, "coffer-server"), "rewrap", "--data-dir", dataDir, "--config", moving).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "0 values moved") || len(regexp.MustCompile(`(?m)^  \d+ sealed under `).FindAllString(string(out), -1)) != 1 || !strings.Contains(string(out), "sealed under vault-transit:transit/coffer-kek\n") {
		t.Fatalf("coffer-server rewrap: %v\n%s", err, out)
	}
	// Every kept version opens under the Transit key alone.
	checkOpens(t, dataDir, v.Addr, tok, want)

	// The key file can go; the server starts with Transit only.
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	srv = testkit.StartServerAt(t, addr, dataDir, "--config", final)
	if err := put(srv, "app/s00", "after"); err != nil {
		t.Fatal(err)
	}
	srv.MustCLI(t, "", "secret", "ls")
	srv.Stop()
	checkOpens(t, dataDir, v.Addr, tok, want)
	if _, err := os.Stat(keyFile); err == nil {
		t.Fatal("a master key file was created")
	}

	// The default seal on this store is a clear error, and changes nothing.
	p := testkit.Start(t, testkit.Bin(t, "coffer-server"), "--data-dir", dataDir, "--listen", testkit.FreeAddr(t))
	deadline := time.Now().Add(20 * time.Second)
	for !p.Exited() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(p.Logs(), "sealed with master key vault-transit:transit/coffer-kek") {
		t.Fatalf("default seal on a Transit store:\n%s", p.Logs())
	}
	if _, err := os.Stat(keyFile); err == nil {
		t.Fatal("a master key file was created")
	}
}

// checkOpens opens every kept version in want with the Transit key alone.
func checkOpens(t *testing.T, dataDir, addr, tok string, want map[string]string) {
	t.Helper()
	ctx := context.Background()
	w, err := transit.New(transit.Config{Address: addr, TokenFile: tok, Key: "coffer-kek", MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	st, err := bolt.Open(filepath.Join(dataDir, "coffer.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	counts, canary, err := catalog.SealStatus(ctx, st)
	if err != nil || len(counts) != 1 || canary != w.KeyID() {
		t.Fatalf("store sealed as %v (canary %s), %v", counts, canary, err)
	}
	c, err := catalog.Open(ctx, catalog.Config{Store: st, Key: w})
	if err != nil {
		t.Fatal(err)
	}
	opened := 0
	for k, val := range want {
		name, ver, _ := strings.Cut(k, "@")
		var n uint64
		fmt.Sscan(ver, &n)
		m, err := c.Show(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		kept := false
		for _, vm := range m.Versions {
			kept = kept || vm.Version == n
		}
		if !kept {
			continue // trimmed by max_versions
		}
		got, err := c.Value(ctx, name, n)
		if err != nil || string(got) != val {
			t.Errorf("%s version %d: %q, %v; want %q", name, n, got, err, val)
		}
		opened++
	}
	if opened < 36 {
		t.Fatalf("only %d versions checked", opened)
	}
}
