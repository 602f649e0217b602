package cli_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/test/testkit"
)

// serverRefused reports whether an exit code is a failure answered by the server
// (1 today; the distinct codes for not found, forbidden and unreachable
// are above 2), not a usage error (2) and not success.
func serverRefused(code int) bool { return code == 1 || code > 2 }

// TestCLIRollbackAndSoftDelete: rollback copies a kept version; rm is a
// soft delete that undelete reverts; --purge destroys; bad input is a
// clear error and changes nothing; values never show.
func TestCLIRollbackAndSoftDelete(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	s := testkit.StartServer(t, filepath.Join(t.TempDir(), "data"))
	const probe = "cli-rollback-probe-"
	for i := 1; i <= 3; i++ {
		s.MustCLI(t, fmt.Sprint(probe, i), "secret", "put", "payments/db")
	}
	var m struct {
		Name    string `json:"name"`
		Current uint64 `json:"current_version"`
	}
	out := s.MustCLI(t, probe+"4", "secret", "put", "payments/db", "-o", "json")
	if err := json.Unmarshal([]byte(out), &m); err != nil || m.Name != "payments/db" || m.Current != 4 {
		t.Fatalf("put -o json: %v %s", err, out)
	}

	if out := s.MustCLI(t, "", "secret", "rollback", "payments/db", "--to", "2"); out != "payments/db: version 5 stored, a copy of version 2\n" {
		t.Fatalf("rollback: %q", out)
	}
	if out := s.MustCLI(t, "", "secret", "show", "payments/db"); !strings.Contains(out, "rollback to version 2") || !strings.Contains(out, "Current:  5") {
		t.Fatalf("show:\n%s", out)
	}
	show := func() string { return s.MustCLI(t, "", "secret", "show", "payments/db", "-o", "json") }
	before := show()
	out = s.MustCLI(t, "", "secret", "rollback", "payments/db", "--to", "3", "--dry-run")
	if !strings.HasPrefix(out, "dry run: nothing was changed\npayments/db: version 6 would be stored, a copy of version 3 (now version 5)\n") {
		t.Fatalf("rollback --dry-run:\n%s", out)
	}
	if show() != before {
		t.Fatal("a dry run changed the secret")
	}
	for i := 0; i < 10; i++ { // versions 6..15; 1..5 pruned
		s.MustCLI(t, fmt.Sprint(probe, "x", i), "secret", "put", "payments/db")
	}
	before = show()
	for _, tt := range []struct {
		args  []string
		usage bool
		says  string
	}{
		{[]string{"--to", "1"}, false, "version 1 of secret payments/db: no longer kept: it was pruned or destroyed (versions kept: 6 to 15)"},
		{[]string{"--to", "99"}, false, "secret payments/db has no version 99 (the current version is 15)"},
		{[]string{"--to", "15"}, false, "it is the current version already"},
		{nil, true, "--to VERSION is required"},
		{[]string{"--to", "0"}, true, "--to VERSION is required"},
		{[]string{"--to", "-1"}, true, "invalid argument"},
	} {
		_, errOut, code := s.CLI(t, "", append([]string{"secret", "rollback", "payments/db"}, tt.args...)...)
		if tt.usage && code != 2 || !tt.usage && !serverRefused(code) || !strings.Contains(errOut, tt.says) {
			t.Errorf("rollback %v: exit %d: %s", tt.args, code, errOut)
		}
	}
	if _, errOut, code := s.CLI(t, "", "secret", "rollback", "payments/none", "--to", "1"); !serverRefused(code) || !strings.Contains(errOut, "not found") {
		t.Errorf("rollback of a missing secret: exit %d: %s", code, errOut)
	}
	if show() != before {
		t.Fatal("a refused rollback changed the secret")
	}

	// rm is restorable; --purge is not.
	s.MustCLI(t, "v", "secret", "put", "payments/other")
	out = s.MustCLI(t, "", "secret", "rm", "payments/db", "--dry-run")
	if !strings.HasPrefix(out, "dry run: nothing was changed\npayments/db: would be deleted, restorable with coffer secret undelete until ") ||
		!strings.Contains(out, "Running containers: none affected") {
		t.Fatalf("rm --dry-run:\n%s", out)
	}
	if show() != before {
		t.Fatal("rm --dry-run deleted")
	}
	if out := s.MustCLI(t, "", "secret", "rm", "payments/db"); !strings.HasPrefix(out, "payments/db: deleted; coffer secret undelete payments/db restores it until 20") {
		t.Fatalf("rm: %q", out)
	}
	if _, errOut, code := s.CLI(t, "", "secret", "show", "payments/db"); !serverRefused(code) || !strings.Contains(errOut, "can be restored (undelete) until") {
		t.Fatalf("show deleted: exit %d %s", code, errOut)
	}
	if ls := s.MustCLI(t, "", "secret", "ls"); strings.Contains(ls, "payments/db") {
		t.Fatalf("ls lists a deleted secret:\n%s", ls)
	}
	ls := s.MustCLI(t, "", "secret", "ls", "--deleted")
	if lines := strings.Split(strings.TrimSpace(ls), "\n"); len(lines) != 2 || !strings.Contains(lines[0], "PURGED AFTER") || !strings.HasPrefix(lines[1], "payments/db") {
		t.Fatalf("ls --deleted:\n%s", ls)
	}
	if out := s.MustCLI(t, "", "secret", "undelete", "payments/db"); out != "payments/db: restored at version 15\n" {
		t.Fatalf("undelete: %q", out)
	}
	if show() != before {
		t.Fatalf("undelete did not restore the same secret:\n%s\nwas\n%s", show(), before)
	}
	for _, tt := range []struct {
		args []string
		says string
	}{
		{[]string{"secret", "undelete", "payments/db"}, "it is not deleted"},
		{[]string{"secret", "undelete", "payments/never"}, "never deleted, or purged"},
	} {
		if _, errOut, code := s.CLI(t, "", tt.args...); !serverRefused(code) || !strings.Contains(errOut, tt.says) {
			t.Errorf("coffer %v: exit %d: %s", tt.args, code, errOut)
		}
	}
	if out := s.MustCLI(t, "", "secret", "rm", "payments/db", "--purge"); out != "payments/db: purged: every version destroyed\n" {
		t.Fatalf("rm --purge: %q", out)
	}
	if _, errOut, code := s.CLI(t, "", "secret", "undelete", "payments/db"); !serverRefused(code) || !strings.Contains(errOut, "never deleted, or purged") ||
		!strings.Contains(errOut, "coffer secret ls --deleted") {
		t.Fatalf("undelete purged: exit %d: %s", code, errOut)
	}
	s.MustCLI(t, "", "secret", "rm", "payments/other")
	s.MustCLI(t, "", "secret", "rm", "payments/other", "--purge") // a deleted secret purged at once
	if ls := s.MustCLI(t, "", "secret", "ls", "--deleted"); strings.Contains(ls, "payments/") {
		t.Fatalf("purged secrets listed:\n%s", ls)
	}

	// Audit: the rollback is on the record with from and to, never a value.
	var evs []struct {
		Details map[string]string `json:"details"`
	}
	if err := json.Unmarshal([]byte(s.MustCLI(t, "", "audit", "ls", "--action", "secret.rollback", "-o", "json")), &evs); err != nil || len(evs) < 2 ||
		evs[0].Details["from"] != "4" || evs[0].Details["to"] != "2" || evs[0].Details["version"] != "5" {
		t.Fatalf("audit: %v %+v", err, evs)
	}
	s.Stop()
	assertAbsent(t, probe, s.Logs(), s.DataDir)
}

// TestCLIBindGuardRails: create refuses an existing name, update and
// --overwrite show the diff, show and ls tell a missing secret, modes in
// every octal spelling, '*' refused, bind test explains, and a scoped
// operator's bind rm says 404 as GET does.
func TestCLIBindGuardRails(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	s := testkit.StartServer(t, filepath.Join(t.TempDir(), "data"))
	s.MustCLI(t, "v", "secret", "put", "payments/db")
	s.MustCLI(t, "v", "secret", "put", "payments/gone")
	s.MustCLI(t, "", "secret", "rm", "payments/gone")

	out := s.MustCLI(t, "", "bind", "create", "web-db", "--secret", "payments/db", "--selector", "app=web")
	if !strings.HasPrefix(out, "binding web-db created: payments/db → /run/secrets/db (mode 0400") {
		t.Fatalf("create: %q", out)
	}
	ls := s.MustCLI(t, "", "bind", "ls")
	_, errOut, code := s.CLI(t, "", "bind", "create", "web-db", "--secret", "payments/gone", "--selector", "app=evil")
	if !serverRefused(code) || !strings.Contains(errOut, "binding web-db: conflict: it already exists") || !strings.Contains(errOut, "coffer bind update web-db changes it") {
		t.Fatalf("create over an existing binding: exit %d: %s", code, errOut)
	}
	if s.MustCLI(t, "", "bind", "ls") != ls {
		t.Fatal("a refused create changed the bindings")
	}
	out = s.MustCLI(t, "", "bind", "create", "web-db", "--secret", "payments/db", "--selector", "app=web", "--mode", "0640", "--overwrite", "--dry-run")
	if !strings.Contains(out, "dry run: nothing was changed") || !strings.Contains(out, "binding web-db would be updated:\n    mode: 0400 → 0640") {
		t.Fatalf("create --overwrite --dry-run: %s", out)
	}
	if _, errOut, code := s.CLI(t, "", "bind", "create", "web-db", "--secret", "payments/db", "--selector", "app=web", "--dry-run"); !serverRefused(code) || !strings.Contains(errOut, "already exists") {
		t.Fatalf("create --dry-run over existing: exit %d %s", code, errOut)
	}

	out = s.MustCLI(t, "", "bind", "update", "web-db", "--selector", "app=web,env=prod", "--mode", "0o640")
	if out != "binding web-db updated:\n    selector: app=web → app=web,env=prod\n    mode: 0400 → 0640\n" {
		t.Fatalf("update: %q", out)
	}
	out = s.MustCLI(t, "", "bind", "create", "web-db", "--secret", "payments/db", "--selector", "app=web", "--mode", "640", "--overwrite")
	if out != "binding web-db replaced:\n    selector: app=web,env=prod → app=web\n" {
		t.Fatalf("create --overwrite: %q", out)
	}
	if out := s.MustCLI(t, "", "bind", "update", "web-db", "--mode", "0640"); out != "binding web-db: unchanged\n" {
		t.Fatalf("update to the same: %q", out)
	}
	show := s.MustCLI(t, "", "bind", "show", "web-db")
	for _, want := range []string{"Name:        web-db", "Secret:      payments/db (ok)", "Mode:        0640", "Image:       - (any image)", "Managed by:  -"} {
		if !strings.Contains(show, want) {
			t.Errorf("bind show lacks %q:\n%s", want, show)
		}
	}
	var shown map[string]any
	if err := json.Unmarshal([]byte(s.MustCLI(t, "", "bind", "show", "web-db", "-o", "json")), &shown); err != nil || shown["mode"] != float64(0o640) {
		t.Fatalf("bind show -o json: %v %v", err, shown)
	}

	// STATUS: ok, secret missing, secret deleted.
	s.MustCLI(t, "", "bind", "create", "to-missing", "--secret", "payments/nope", "--selector", "app=x")
	s.MustCLI(t, "", "bind", "create", "to-deleted", "--secret", "payments/gone", "--selector", "app=x")
	ls = s.MustCLI(t, "", "bind", "ls")
	for name, status := range map[string]string{"web-db": "ok", "to-missing": "secret missing", "to-deleted": "secret deleted"} {
		found := false
		for _, l := range strings.Split(ls, "\n") {
			found = found || strings.HasPrefix(l, name+" ") && strings.Contains(l, "  "+status+"  ")
		}
		if !found {
			t.Errorf("bind ls: %s is not %q:\n%s", name, status, ls)
		}
	}
	if !strings.Contains(s.MustCLI(t, "", "bind", "show", "to-missing"), "payments/nope (secret missing)") {
		t.Error("bind show does not say the secret is missing")
	}

	// Bad input: usage errors naming the flag, nothing changed.
	for _, tt := range []struct {
		args []string
		says string
	}{
		{[]string{"bind", "create", "x", "--secret", "payments/db", "--selector", "app=x", "--image", "*"}, `image "*": a lone "*" would mean Docker Hub's official images only`},
		{[]string{"bind", "create", "x", "--secret", "payments/db", "--selector", "app=x", "--mode", "0o1000"}, "--mode: invalid binding: mode \"0o1000\": only permission bits"},
		{[]string{"bind", "create", "x", "--secret", "payments/db", "--selector", "app=x", "--mode", "rw"}, "write it in octal, e.g. 0440, 440 or 0o440"},
		{[]string{"bind", "create", "x", "--secret", "payments/db", "--selector", "app=x", "--mode", "0o200"}, "the owner must be able to read the file (add 0o400)"},
		{[]string{"bind", "update", "web-db"}, "nothing to change"},
		{[]string{"bind", "update", "web-db", "--selector", "app in ("}, `selector "app in ("`},
		{[]string{"bind", "show"}, "takes 1 argument"},
	} {
		_, errOut, code := s.CLI(t, "", tt.args...)
		if code != 2 || !strings.Contains(errOut, tt.says) {
			t.Errorf("coffer %v: exit %d, want 2 saying %s: %s", tt.args, code, tt.says, errOut)
		}
	}
	if _, errOut, code := s.CLI(t, "", "bind", "update", "nope", "--selector", "app=x"); !serverRefused(code) || !strings.Contains(errOut, "coffer bind create nope makes it") {
		t.Errorf("update of a missing binding: exit %d: %s", code, errOut)
	}
	ls = s.MustCLI(t, "", "bind", "ls")

	// A scoped operator: bind rm of another scope's binding says what GET says.
	scoped := *s
	scoped.Token = strings.TrimSpace(s.MustCLI(t, "", "token", "create", "--role", "operator", "--scope", "billing/*"))
	_, showErr, showCode := scoped.CLI(t, "", "bind", "show", "web-db")
	_, rmErr, rmCode := scoped.CLI(t, "", "bind", "rm", "web-db")
	if showCode != rmCode || showErr != rmErr || !strings.Contains(rmErr, "binding web-db: not found (HTTP 404)") {
		t.Fatalf("scoped show: exit %d %q; rm: exit %d %q", showCode, showErr, rmCode, rmErr)
	}
	out = s.MustCLI(t, "", "bind", "rm", "web-db", "--dry-run")
	if !strings.Contains(out, "binding web-db would be deleted") {
		t.Fatalf("rm --dry-run: %s", out)
	}
	if s.MustCLI(t, "", "bind", "ls") != ls {
		t.Fatal("a refused or dry-run rm changed the bindings")
	}

	// bind test: an override, and why nothing matched.
	s.MustCLI(t, "v", "secret", "put", "payments/db-ro")
	s.MustCLI(t, "", "bind", "create", "web-ro", "--secret", "payments/db-ro", "--selector", "app=web", "--file", "db")
	s.MustCLI(t, "", "bind", "create", "web-prod", "--secret", "payments/db", "--selector", "app=web", "--file", "prod", "--hosts", "env=prod")
	out = s.MustCLI(t, "", "bind", "test", "--labels", "app=web")
	if !strings.Contains(out, "web-ro: payments/db-ro → /run/secrets/db, hidden by web-db") {
		t.Errorf("bind test does not show the override:\n%s", out)
	}
	out = s.MustCLI(t, "", "bind", "test", "--labels", "app=api")
	if !strings.HasPrefix(out, "No binding gives this container a secret.") ||
		!strings.Contains(out, "web-prod (payments/db): selector: app=web is not met: the container has app=api") {
		t.Errorf("bind test, nothing matched:\n%s", out)
	}
	out = s.MustCLI(t, "", "bind", "test", "--labels", "app=web", "--host-labels", "env=dev", "--explain")
	if !strings.Contains(out, "web-prod (payments/db): hosts: env=prod is not met: the host has env=dev") {
		t.Errorf("bind test --explain:\n%s", out)
	}
	var ex struct {
		Granted  []any `json:"granted"`
		Shadowed []any `json:"shadowed"`
	}
	if err := json.Unmarshal([]byte(s.MustCLI(t, "", "bind", "test", "--labels", "app=web", "--explain", "-o", "json")), &ex); err != nil || len(ex.Granted) != 1 || len(ex.Shadowed) != 1 {
		t.Errorf("bind test --explain -o json: %v %+v", err, ex)
	}
}

// TestCLIApplyExport: export then apply is a no-op; apply creates,
// updates and prunes only its own; bad files are errors naming file and
// line, and change nothing; values never show.
func TestCLIApplyExport(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	dir := t.TempDir()
	s := testkit.StartServer(t, filepath.Join(dir, "data"))
	const probe = "cli-apply-probe-value"
	s.MustCLI(t, probe, "secret", "put", "payments/db")
	s.MustCLI(t, probe+"2", "secret", "put", "payments/key")
	s.MustCLI(t, "", "bind", "create", "by-hand", "--secret", "payments/db", "--selector", "!debug,app in (web,api)", "--image", "registry.example.com/web:*",
		"--hosts", "env=prod", "--mode", "0440", "--gid", "1000")
	s.MustCLI(t, "", "bind", "create", "plain", "--secret", "payments/key", "--selector", "tier,!debug")

	export := s.MustCLI(t, "", "export")
	if strings.Contains(export, probe) {
		t.Fatal("export prints a value")
	}
	for _, want := range []string{"kind: Secret\nname: payments/db\n", "kind: Binding\nname: by-hand\n", `mode: "0440"`, "selector: app in (api,web),!debug\n", "selector: '!debug,tier'\n"} {
		if !strings.Contains(export, want) {
			t.Errorf("export lacks %q:\n%s", want, export)
		}
	}
	x := filepath.Join(dir, "x.yaml")
	os.WriteFile(x, []byte(export), 0o600)
	ls := s.MustCLI(t, "", "bind", "ls", "-o", "json")
	if out := s.MustCLI(t, "", "apply", "-f", x); out != "2 binding(s) unchanged\n" {
		t.Fatalf("apply of the export: %q", out)
	}
	if s.MustCLI(t, "", "bind", "ls", "-o", "json") != ls {
		t.Fatal("applying the export changed the bindings")
	}

	// A directory of files: created, then a no-op, then pruned.
	repo := filepath.Join(dir, "repo")
	os.Mkdir(repo, 0o700)
	os.WriteFile(filepath.Join(repo, "a.yaml"), []byte(`kind: Binding
name: web-db
secret: payments/db
selector: app=web
mode: 0440
---
kind: Secret
name: payments/db
`), 0o600)
	os.WriteFile(filepath.Join(repo, "b.yml"), []byte(`bindings:
  - name: web-key
    secret: payments/key
    selector: app=web
    file: key
secrets:
  - name: payments/new
`), 0o600)
	os.WriteFile(filepath.Join(repo, "README.md"), []byte("not yaml: skipped\n"), 0o600)
	out, errOut, code := s.CLI(t, "", "apply", "-f", repo, "--dry-run")
	if code != 0 || !strings.HasPrefix(out, "dry run: nothing was changed\nbinding web-db would be created: payments/db → /run/secrets/db (mode 0440") ||
		!strings.Contains(out, "binding web-key would be created") || !strings.Contains(errOut, "b.yml:7: secret payments/new does not exist") {
		t.Fatalf("apply --dry-run: exit %d\n%s%s", code, out, errOut)
	}
	if s.MustCLI(t, "", "bind", "ls", "-o", "json") != ls {
		t.Fatal("apply --dry-run changed the bindings")
	}
	out = s.MustCLI(t, "", "apply", "-f", repo, "--prune")
	if out != "binding web-db created: payments/db → /run/secrets/db (mode 0440, uid 0, gid 0) for containers with app=web\n"+
		"binding web-key created: payments/key → /run/secrets/key (mode 0400, uid 0, gid 0) for containers with app=web\n" {
		t.Fatalf("apply: %q", out)
	}
	if out := s.MustCLI(t, "", "apply", "-f", repo, "--prune", "-v"); out != "binding web-db unchanged\nbinding web-key unchanged\n" {
		t.Fatalf("apply again: %q", out)
	}
	if !strings.Contains(s.MustCLI(t, "", "bind", "show", "web-key"), "Managed by:  coffer-apply") {
		t.Fatal("apply did not mark what it created")
	}
	os.Remove(filepath.Join(repo, "b.yml"))
	if out := s.MustCLI(t, "", "apply", "-f", repo, "--prune"); out != "binding web-key deleted\n1 binding(s) unchanged\n" {
		t.Fatalf("apply --prune: %q", out)
	}
	for _, n := range []string{"by-hand", "plain"} {
		s.MustCLI(t, "", "bind", "show", n) // made by hand: never pruned
	}

	// Bad files: an error naming the file and line, exit 2, nothing changed.
	ls = s.MustCLI(t, "", "bind", "ls", "-o", "json")
	bad := filepath.Join(dir, "bad")
	os.Mkdir(bad, 0o700)
	for _, tt := range []struct {
		yaml, says string
	}{
		{"kind: Binding\nname: x\nsecret: payments/db\nselectr: app=x\n", `bad.yaml:4: unknown field "selectr" in a Binding (fields: kind, name, secret, selector`},
		{"kind: Binding\nname: x\nsecret: payments/db\nselector: app in (x\n", `bad.yaml:1: invalid binding "x": selector "app in (x"`},
		{"kind: Binding\nname: x\nsecret: payments/db\nselector: app=x\nhosts: 'env in (a'\n", `bad.yaml:1: invalid binding "x": hosts "env in (a"`},
		{"kind: Binding\nname: x\nsecret: payments/db\nselector: app=x\nuid: abc\n", `bad.yaml:5: field "uid": want a decimal integer, got "abc"`},
		{"kind: Binding\nname: x\nsecret: payments/db\nselector: app=x\nmode: 288\n", `bad.yaml:5: invalid binding: mode "288": write it in octal`},
		{"kind: Binding\nname: x\nsecret: payments/db\nselector: app=x\nimage: '*'\n", `bad.yaml:1: invalid binding "x": image "*": a lone "*"`},
		{"kind: Binding\nname: x\nname: y\n", `bad.yaml:3: field "name" given twice`},
		{"kind: Binding\nname: x\nsecret: payments/db\nselector: !debug\n", `bad.yaml:4: field "selector": want a string, got a value tagged !debug`},
		{"kind: Secret\nname: payments/db\nvalue: hunter2\n", `bad.yaml:3: field "value": these files never hold values`},
		{"kind: Bindng\nname: x\n", `bad.yaml:1: unknown kind "Bindng" (Binding or Secret)`},
		{"bindings:\n  - &b {name: x, secret: payments/db, selector: app=x}\n  - *b\n", `bad.yaml:2: anchors (&b) are not allowed`},
		{"bindings:\n  - name: x\n    secret: payments/db\n    selector: app=x\n  - name: x\n    secret: payments/db\n    selector: app=y\n", `bad.yaml:5: binding "x" is also declared at`},
		{"selector: app=x\n", `bad.yaml:1: unknown field "selector": a document has kind: Binding, kind: Secret, or bindings: and secrets: lists`},
		{"kind: Binding\nname: x\n  bad indent: [\n", "bad.yaml: yaml: line"},
		{"kind: Binding\nsecret: payments/db\nselector: app=x\n", "bad.yaml:1: a Binding needs a name"},
	} {
		os.WriteFile(filepath.Join(bad, "bad.yaml"), []byte(tt.yaml), 0o600)
		out, errOut, code := s.CLI(t, "", "apply", "-f", repo, "-f", bad, "--prune")
		if code != 2 || !strings.Contains(errOut, tt.says) || out != "" {
			t.Errorf("apply of\n%s: exit %d, want 2 saying %s:\n%s%s", tt.yaml, code, tt.says, out, errOut)
		}
	}
	if _, errOut, code := s.CLI(t, "", "apply"); code != 2 || !strings.Contains(errOut, "-f FILE|DIR is required") {
		t.Errorf("apply without -f: exit %d %s", code, errOut)
	}
	if _, errOut, code := s.CLI(t, "", "apply", "-f", filepath.Join(dir, "data")); code != 2 || !strings.Contains(errOut, "no *.yaml or *.yml files") {
		t.Errorf("apply of a directory without YAML: exit %d %s", code, errOut)
	}
	if _, errOut, code := s.CLI(t, "", "apply", "-f", repo, "--owner", "not valid"); code != 2 || !strings.Contains(errOut, "--owner") {
		t.Errorf("apply --owner 'not valid': exit %d %s", code, errOut)
	}
	if s.MustCLI(t, "", "bind", "ls", "-o", "json") != ls {
		t.Fatal("a refused apply changed the bindings")
	}
	// Standard input works too.
	if out := s.MustCLI(t, "kind: Binding\nname: web-db\nsecret: payments/db\nselector: app=web\nmode: \"0440\"\nmanaged_by: coffer-apply\n", "apply", "-f", "-"); out != "1 binding(s) unchanged\n" {
		t.Fatalf("apply -f -: %q", out)
	}
	s.Stop()
	assertAbsent(t, probe, s.Logs(), s.DataDir)
}
