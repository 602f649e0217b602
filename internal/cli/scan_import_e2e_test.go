package cli_test

import (
	"archive/tar"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/test/testkit"
)

// importImage is a docker save tarball with three secrets an import should
// take (a password in .env, repeated in the config's ENV; a Stripe key; an
// EC private key) and one it must leave (a test fixture).
type importImage struct {
	path                    string
	password, stripe, ecKey string
}

func newImportImage(t *testing.T) importImage {
	t.Helper()
	r := mrand.New(mrand.NewPCG(11, 12))
	pick := func(n int) string {
		const an = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
		b := make([]byte, n)
		for i := range b {
			b[i] = an[r.IntN(len(an))]
		}
		return string(b)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	im := importImage{
		password: "Zr" + pick(14),
		stripe:   "sk_live_" + pick(32),
		ecKey:    strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))),
	}
	layer := tarOf(t, map[string]string{
		"app/.env":                      "DB_HOST=db.corp.internal\nDB_PASSWORD=" + im.password + "\n",
		"app/config/prod.yaml":          "billing:\n  stripe_secret: " + im.stripe + "\n",
		"app/tests/fixtures/users.json": `[{"name": "alice", "password": "` + pick(16) + `"}]` + "\n",
		"srv/tls.key":                   im.ecKey + "\n",
	})
	sum := sha256.Sum256(layer)
	diffID := "sha256:" + hex.EncodeToString(sum[:])
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Env": []string{"PATH=/usr/bin", "DB_PASSWORD=" + im.password}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	})
	man, _ := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{"registry.corp.internal/team/billing:1.4"}, "Layers": []string{"l0/layer.tar"}}})
	im.path = filepath.Join(t.TempDir(), "billing.tar")
	if err := os.WriteFile(im.path, tarOf(t, map[string]string{"config.json": string(cfg), "l0/layer.tar": string(layer), "manifest.json": string(man)}), 0o600); err != nil {
		t.Fatal(err)
	}
	return im
}

func tarOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var names []string
	for n := range files {
		names = append(names, n)
	}
	// manifest.json last, as docker save writes it; the rest sorted.
	for i := range names {
		for j := i + 1; j < len(names); j++ {
			if names[j] < names[i] {
				names[i], names[j] = names[j], names[i]
			}
		}
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(files[n]))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(files[n]))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func secretNames(t *testing.T, s *testkit.Server, prefix string) []string {
	t.Helper()
	var ms []struct {
		Name    string `json:"name"`
		Current uint64 `json:"current_version"`
	}
	if err := json.Unmarshal([]byte(s.MustCLI(t, "", "secret", "ls", "--prefix", prefix, "-o", "json")), &ms); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
		if m.Current != 1 {
			t.Errorf("%s: version %d, want 1", m.Name, m.Current)
		}
	}
	return out
}

// TestScanImportEndToEnd imports an image's high-confidence findings into a
// real coffer-server: one secret per distinct value, nothing printed, the
// bind commands shown; a second run refuses (names taken) and changes
// nothing; no token is refused before any scan.
func TestScanImportEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	im := newImportImage(t)
	s := testkit.StartServer(t, filepath.Join(t.TempDir(), "data"))

	out, errOut, code := s.CLI(t, "", "scan", "image", im.path, "--import", "scan/billing", "--fail-on", "none")
	if code != 0 {
		t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"imported 3 secret(s) under scan/billing/",
		"coffer bind create scan/billing/generic-password-1 --secret scan/billing/generic-password-1 --selector 'app=billing' --image 'registry.corp.internal/team/billing'",
		"scan/billing/stripe-secret-key-1",
		"scan/billing/ec-private-key-1",
		"--file tls.key",
		"and 1 more place(s)", // the password is in .env and in ENV: one secret
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	got := secretNames(t, s, "scan/billing/")
	want := []string{"scan/billing/ec-private-key-1", "scan/billing/generic-password-1", "scan/billing/stripe-secret-key-1"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("secrets %v, want %v", got, want)
	}

	// The printed bind commands work as printed, and deliver the secrets to
	// the image's containers (a rebuilt tag included).
	binds := 0
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "coffer bind create ") {
			continue
		}
		s.MustCLI(t, "", shellWords(t, strings.TrimPrefix(line, "coffer "))...)
		binds++
	}
	grants := s.MustCLI(t, "", "bind", "test", "--labels", "app=billing", "--image", "registry.corp.internal/team/billing:1.5")
	for _, n := range want {
		if !strings.Contains(grants, n) {
			t.Errorf("bind test lacks %s:\n%s", n, grants)
		}
	}
	// -o json: the grants alone (the table also explains why the other
	// bindings do not match, and names them).
	if binds != 3 || strings.Contains(s.MustCLI(t, "", "bind", "test", "--labels", "app=billing", "--image", "registry.corp.internal/team/other:1", "-o", "json"), "scan/billing") {
		t.Errorf("%d bind commands, or they match another image", binds)
	}

	// Names taken: refused before any write, versions unchanged.
	out2, errOut2, code := s.CLI(t, "", "scan", "image", im.path, "--import", "scan/billing", "--fail-on", "none")
	if code != 1 || !strings.Contains(errOut2, "already exist") || !strings.Contains(errOut2, "nothing was imported") {
		t.Errorf("second import: exit %d\n%s%s", code, out2, errOut2)
	}
	secretNames(t, s, "scan/billing/") // still version 1 each

	// No token: refused before scanning.
	anon := *s
	anon.Token = ""
	if out, errOut, code := anon.CLI(t, "", "scan", "image", im.path, "--import", "scan/other"); code != 2 || !strings.Contains(errOut, "token") || strings.Contains(out, "finding(s)") {
		t.Errorf("no token: exit %d\n%s%s", code, out, errOut)
	}
	// No server: refused before scanning.
	gone := *s
	gone.Addr = testkit.FreeAddr(t)
	if out, errOut, code := gone.CLI(t, "", "scan", "image", im.path, "--import", "scan/other"); code != 5 || !strings.Contains(errOut, "cannot reach the server") || strings.Contains(out, "finding(s)") {
		t.Errorf("no server: exit %d\n%s%s", code, out, errOut)
	}

	s.Stop()
	for _, v := range []string{im.password, im.stripe, strings.Split(im.ecKey, "\n")[1]} {
		for _, o := range []string{out, errOut, out2, errOut2} {
			if strings.Contains(o, v) {
				t.Error("a value was printed")
			}
		}
		assertAbsent(t, v, s.Logs(), s.DataDir)
	}
}

// TestScanImportRollback: when a put fails midway (the server refuses the
// private key: larger than its max value size), the secrets this run had
// already created are deleted again, and the error says so.
func TestScanImportRollback(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	im := newImportImage(t)
	s := testkit.StartServer(t, filepath.Join(t.TempDir(), "data"), "--max-value-size", "128")
	out, errOut, code := s.CLI(t, "", "scan", "image", im.path, "--import", "scan/billing", "--fail-on", "none")
	if code != 1 {
		t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"import failed at scan/billing/ec-private-key-1", "413", "removed the 2 secret(s) this run had created"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("error lacks %q: %s", want, errOut)
		}
	}
	if strings.Contains(out, "imported") {
		t.Errorf("reported success:\n%s", out)
	}

	if got := secretNames(t, s, "scan/"); len(got) != 0 {
		t.Errorf("left behind: %v", got)
	}
	// The audit trail shows the puts and their deletes.
	audit := s.MustCLI(t, "", "audit", "ls", "-o", "json")
	if strings.Count(audit, "secret.delete") < 2 {
		t.Errorf("audit lacks the rollback deletes:\n%.2000s", audit)
	}
}

// shellWords splits a command line printed for a shell: words separated by
// blanks, single-quoted parts kept whole.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var out []string
	var cur strings.Builder
	in, has := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'':
			in, has = !in, true
		case c == ' ' && !in:
			if has {
				out = append(out, cur.String())
				cur.Reset()
				has = false
			}
		default:
			cur.WriteByte(c)
			has = true
		}
	}
	if in {
		t.Fatalf("unbalanced quotes in %q", line)
	}
	if has {
		out = append(out, cur.String())
	}
	return out
}
