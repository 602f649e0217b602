package cli_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"coffer/internal/identity"
	"coffer/test/testkit"
)

// cliRun runs the coffer binary with exactly env (plus PATH and HOME); it
// returns stdout, stderr and the exit code.
func cliRun(t *testing.T, env []string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	return binRun(t, "coffer", env, stdin, args...)
}

func binRun(t *testing.T, bin string, env []string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(testkit.Bin(t, bin), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// envFor is the environment that points the CLI at s with token tok; the
// config file lives in cfgDir (empty: a fresh one).
func envFor(t *testing.T, s *testkit.Server, tok, cfgDir string) []string {
	if cfgDir == "" {
		cfgDir = t.TempDir()
	}
	return []string{"XDG_CONFIG_HOME=" + cfgDir, "COFFER_ADDR=https://" + s.Addr, "COFFER_CACERT=" + s.CA, "COFFER_TOKEN=" + tok}
}

func mustRun(t *testing.T, env []string, stdin string, args ...string) string {
	t.Helper()
	out, errOut, code := cliRun(t, env, stdin, args...)
	if code != 0 {
		t.Fatalf("coffer %s: exit %d: %s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// apiGet asks the server directly.
func apiGet(t *testing.T, s *testkit.Server, tok, path string) []byte {
	t.Helper()
	pem, err := os.ReadFile(s.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest("GET", "https://"+s.Addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return b
}

// generic decodes JSON or YAML into plain values comparable across both.
func generic(t *testing.T, text []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(text, &v); err != nil {
		t.Fatalf("%v:\n%s", err, text)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	json.Unmarshal(b, &out)
	return out
}

// TestCLIJSONIsTheAPIsJSON: -o json and -o yaml print the server's objects
// as the API sends them: nothing dropped, nothing added (secret ls has no
// "holders": null, secret show keeps the API's holders and pending).
func TestCLIJSONIsTheAPIsJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	s := testkit.StartServer(t, filepath.Join(t.TempDir(), "data"))
	env := envFor(t, s, s.Token, "")
	mustRun(t, env, "v1", "secret", "put", "payments/db")
	mustRun(t, env, "v2", "secret", "put", "payments/db")
	mustRun(t, env, "", "secret", "put", "payments/key", "--generate", "20")
	mustRun(t, env, "", "bind", "create", "web-db", "--secret", "payments/db", "--selector", "app=web", "--hosts", "env=prod")
	mustRun(t, env, "", "token", "create", "--role", "viewer", "--ttl", "1h", "--description", "ro")

	for _, tc := range []struct {
		args []string
		path string
	}{
		{[]string{"audit", "ls", "--secret", "payments/db"}, "/v1/audit?secret=payments%2Fdb"},
		{[]string{"secret", "ls"}, "/v1/secrets?prefix="},
		{[]string{"secret", "show", "payments/db"}, "/v1/secrets/payments/db"},
		{[]string{"bind", "ls"}, "/v1/bindings"},
		{[]string{"token", "ls"}, "/v1/tokens"},
		{[]string{"agent", "ls"}, "/v1/agents"},
		{[]string{"bind", "test", "--labels", "app=web", "--host-labels", "env=prod"}, ""},
		{[]string{"whoami"}, "/v1/whoami"},
	} {
		for _, f := range []string{"json", "yaml"} {
			out := mustRun(t, env, "", append(tc.args, "-o", f)...)
			if tc.path == "" {
				if g := generic(t, []byte(out)); g == nil {
					t.Errorf("%v -o %s: %s", tc.args, f, out)
				}
				continue
			}
			api := apiGet(t, s, s.Token, tc.path)
			if got, want := generic(t, []byte(out)), generic(t, api); !reflect.DeepEqual(got, want) {
				t.Errorf("coffer %v -o %s differs from GET %s:\ncli: %s\napi: %s", tc.args, f, tc.path, out, api)
			}
			if f == "json" && !json.Valid([]byte(out)) {
				t.Errorf("%v: not JSON: %s", tc.args, out)
			}
		}
	}
	if out := mustRun(t, env, "", "secret", "ls", "-o", "json"); strings.Contains(out, "holders") || strings.Contains(out, "null,\n    \"pending\"") {
		t.Errorf("secret ls adds fields the API does not have:\n%s", out)
	}
	if out := mustRun(t, env, "", "secret", "show", "payments/db", "-o", "json"); !strings.Contains(out, `"holders": []`) {
		t.Errorf("secret show lost the API's holders:\n%s", out)
	}
}

// TestCLIMutatingCommandsPrintTheAnswer: -o json/yaml on commands that
// change things prints the server's answer ({} for an empty one); their
// text is unchanged without -o.
func TestCLIMutatingCommandsPrintTheAnswer(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	s := testkit.StartServer(t, filepath.Join(t.TempDir(), "data"))
	env := envFor(t, s, s.Token, "")

	var meta map[string]any
	out := mustRun(t, env, "value-1", "secret", "put", "payments/db", "-o", "json")
	if err := json.Unmarshal([]byte(out), &meta); err != nil || meta["name"] != "payments/db" || meta["current_version"] != 1.0 || meta["versions"] == nil {
		t.Fatalf("secret put -o json: %v %s", err, out)
	}
	if _, ok := meta["holders"]; ok {
		t.Fatalf("put answer grew a holders field: %s", out)
	}
	if out := mustRun(t, env, "value-2", "secret", "put", "payments/db", "-o", "yaml"); !strings.Contains(out, "current_version: 2\n") || strings.Contains(out, "value-2") {
		t.Fatalf("secret put -o yaml:\n%s", out)
	}
	if out := mustRun(t, env, "value-3", "secret", "put", "payments/db"); out != "payments/db: version 3 stored\n" {
		t.Fatalf("text output changed: %q", out)
	}

	out = mustRun(t, env, "", "bind", "create", "web-db", "--secret", "payments/db", "--selector", "env in (prod, dev),app=web", "-o", "json")
	if got, want := generic(t, []byte(out)), generic(t, apiGet(t, s, s.Token, "/v1/bindings/web-db")); !reflect.DeepEqual(got, want) {
		t.Fatalf("bind create -o json:\n%s\nvs the stored binding %v", out, want)
	}

	var tok map[string]any
	out = mustRun(t, env, "", "token", "create", "--role", "viewer", "--ttl", "1h", "-o", "json")
	if json.Unmarshal([]byte(out), &tok) != nil || tok["id"] == nil || !strings.HasPrefix(tok["token"].(string), "coffer_") {
		t.Fatalf("token create -o json: %s", out)
	}
	if out := mustRun(t, env, "", "token", "revoke", tok["id"].(string), "-o", "json"); out != "{}\n" {
		t.Fatalf("token revoke -o json: %q", out)
	}
	for _, args := range [][]string{{"bind", "rm", "web-db"}, {"secret", "rm", "payments/db"}} {
		out := mustRun(t, env, "", append(args, "-o", "json")...)
		var v map[string]any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Errorf("%v -o json: %v %q", args, err, out)
		}
	}

	var verdict map[string]any
	out = mustRun(t, env, "", "audit", "verify", "-o", "json")
	if json.Unmarshal([]byte(out), &verdict) != nil || verdict["ok"] != true || verdict["records"].(float64) < 5 || len(verdict["head"].(string)) != 64 {
		t.Fatalf("audit verify -o json: %s", out)
	}
	log := filepath.Join(s.DataDir, "audit.log")
	out = mustRun(t, env, "", "audit", "verify", "--file", log, "-o", "yaml")
	if !strings.Contains(out, "ok: true\n") || !strings.Contains(out, "records: ") {
		t.Fatalf("audit verify --file -o yaml:\n%s", out)
	}
}

// TestCLIAuditVerifyHead: a head saved from one verification catches a
// later copy that lost its newest records or was rewritten, and passes a
// copy that only grew.
func TestCLIAuditVerifyHead(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	dir := t.TempDir()
	s := testkit.StartServer(t, filepath.Join(dir, "data"))
	env := envFor(t, s, s.Token, "")
	for range 3 {
		mustRun(t, env, "v", "secret", "put", "a")
	}
	log := filepath.Join(s.DataDir, "audit.log")
	out := mustRun(t, env, "", "audit", "verify", "--file", log)
	m := regexp.MustCompile(`head (\d+:[0-9a-f]{64})`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("verify prints no head: %s", out)
	}
	head := m[1]
	raw, _ := os.ReadFile(log)
	mustRun(t, env, "v", "secret", "put", "a") // the trail grows
	if out := mustRun(t, env, "", "audit", "verify", "--file", log, "--head", head); !strings.HasPrefix(out, "ok:") {
		t.Fatalf("grown trail: %s", out)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(raw), "\n"), "\n")
	cut := filepath.Join(dir, "cut.log")
	os.WriteFile(cut, []byte(strings.Join(lines[:len(lines)-2], "")), 0o600)
	if _, errOut, code := cliRun(t, env, "", "audit", "verify", "--file", cut); code != 0 {
		t.Fatalf("a cut chain is still a chain: exit %d %s", code, errOut)
	}
	if _, errOut, code := cliRun(t, env, "", "audit", "verify", "--file", cut, "--head", head); code != 1 || !strings.Contains(errOut, "removed from the end") {
		t.Fatalf("removed tail: exit %d %s", code, errOut)
	}
	wrong := head[:len(head)-1] + map[bool]string{true: "1", false: "0"}[head[len(head)-1] == '0']
	if _, errOut, code := cliRun(t, env, "", "audit", "verify", "--file", log, "--head", wrong); code != 1 || !strings.Contains(errOut, "tampered") {
		t.Fatalf("wrong head: exit %d %s", code, errOut)
	}
	for _, bad := range []string{"12", "x:abc", "0:" + strings.Repeat("a", 64)} {
		if _, _, code := cliRun(t, env, "", "audit", "verify", "--file", log, "--head", bad); code != 2 {
			t.Errorf("--head %q: exit %d", bad, code)
		}
	}
	// Online, the server checks its live trail against the head too.
	if out := mustRun(t, env, "", "audit", "verify", "--head", head); !strings.HasPrefix(out, "ok:") {
		t.Fatalf("online verify --head: %s", out)
	}
}

// TestCLIExitCodesAndErrorObjects: each documented exit code, and the
// error object on stderr with -o json.
func TestCLIExitCodesAndErrorObjects(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	dir := t.TempDir()
	s := testkit.StartServer(t, filepath.Join(dir, "data"))
	env := envFor(t, s, s.Token, "")
	mustRun(t, env, "v", "secret", "put", "payments/db")
	viewer := strings.TrimSpace(mustRun(t, env, "", "token", "create", "--role", "viewer", "--ttl", "1h"))
	other, _, err := identity.LoadOrCreateCA(filepath.Join(dir, "other-ca"))
	if err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(dir, "other-ca.pem")
	os.WriteFile(otherCA, other.CertPEM, 0o600)
	dead := "https://" + testkit.FreeAddr(t)
	garbage := filepath.Join(dir, "garbage.log")
	os.WriteFile(garbage, []byte("not a record\n"), 0o600)

	type errObj struct {
		Error  string `json:"error"`
		Code   int    `json:"code"`
		Status int    `json:"status"`
	}
	for _, tc := range []struct {
		name   string
		env    []string
		args   []string
		code   int
		status int
		inErr  string
	}{
		{"failure", env, []string{"audit", "verify", "--file", garbage}, 1, 0, "tampered"},
		{"bad role", env, []string{"token", "create", "--role", "root"}, 2, 0, "--role"},
		{"input the server refused", env, []string{"secret", "put", "payments/x", "--generate", "5000"}, 2, 400, "length"},
		{"not found", env, []string{"secret", "show", "payments/nope"}, 3, 404, "not found"},
		{"permission denied", envFor(t, s, viewer, ""), []string{"secret", "put", "payments/db"}, 4, 403, "may not"},
		{"unauthenticated", envFor(t, s, "coffer_0000000000000000_AAAA", ""), []string{"secret", "ls"}, 4, 401, "token"},
		{"unreachable", append(env, "COFFER_ADDR="+dead), []string{"secret", "ls"}, 5, 0, "cannot reach the server at " + dead + " (from COFFER_ADDR)"},
		{"unknown CA", append(env, "COFFER_CACERT="), []string{"secret", "ls"}, 5, 0, "set COFFER_CACERT"},
		{"wrong CA", append(env, "COFFER_CACERT="+otherCA), []string{"secret", "ls"}, 5, 0, "did not sign"},
	} {
		_, errOut, code := cliRun(t, tc.env, "v", tc.args...)
		if code != tc.code || !strings.HasPrefix(errOut, "coffer: ") || !strings.Contains(errOut, tc.inErr) {
			t.Errorf("%s: exit %d, want %d: %s", tc.name, code, tc.code, errOut)
		}
		out, errOut, code := cliRun(t, tc.env, "v", append(tc.args, "-o", "json")...)
		var e errObj
		if err := json.Unmarshal([]byte(errOut), &e); err != nil || code != tc.code || e.Code != tc.code || e.Status != tc.status || !strings.Contains(e.Error, tc.inErr) || out != "" && tc.name != "failure" { // verify prints its verdict
			t.Errorf("%s -o json: exit %d, stdout %q, stderr %q", tc.name, code, out, errOut)
		}
	}
	// "unknown CA" names the flag too, and where the address came from.
	_, errOut, _ := cliRun(t, append(env, "COFFER_CACERT="), "", "secret", "ls")
	if !strings.Contains(errOut, "--cacert") || !strings.Contains(errOut, "ca.pem") {
		t.Errorf("unknown CA hint: %s", errOut)
	}
	// A group with an unknown command, as "bind show" once was, is a usage error.
	if out, _, code := cliRun(t, env, "", "bind", "frobnicate", "x"); code != 2 || strings.Contains(out, "Available Commands") {
		t.Errorf("bind frobnicate x: exit %d: %s", code, out)
	}
	help := mustRun(t, env, "", "--help")
	for _, want := range []string{"0 ok", "1 failure", "2 usage", "3 not found", "4 unauthenticated or permission denied", "5 server unreachable", "6 conflict", `"code"`} {
		if !strings.Contains(strings.Join(strings.Fields(help), " "), want) {
			t.Errorf("coffer --help lacks %q", want)
		}
	}
}

// TestCLIContexts: contexts in the config file, flags > environment >
// context, --token-file, warnings for readable files, unknown contexts and
// dead servers; never a token in what config and whoami print.
func TestCLIContexts(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	dir := t.TempDir()
	s := testkit.StartServer(t, filepath.Join(dir, "data"))
	mustRun(t, envFor(t, s, s.Token, ""), "v", "secret", "put", "payments/db")
	cfgDir := filepath.Join(dir, "xdg")
	cfgFile := filepath.Join(cfgDir, "coffer", "config.yaml")
	tokFile := filepath.Join(dir, "admin.token")
	os.WriteFile(tokFile, []byte(s.Token+"\n"), 0o600)
	env := []string{"XDG_CONFIG_HOME=" + cfgDir} // no COFFER_* at all
	deadAddr := testkit.FreeAddr(t)
	secret := strings.SplitN(s.Token, "_", 3)[2] // coffer_<hex id>_<secret>; the secret may hold "_" itself
	noToken := func(what, text string) {
		t.Helper()
		if strings.Contains(text, secret) {
			t.Fatalf("%s prints the token", what)
		}
	}

	// Nothing configured: the default server, and a clear "no token".
	if _, errOut, code := cliRun(t, env, "", "secret", "ls"); code != 2 || !strings.Contains(errOut, "no token") {
		t.Fatalf("unconfigured: exit %d %s", code, errOut)
	}
	out := mustRun(t, env, "", "config", "set-context", "lab", "--server", s.Addr, "--ca-cert", s.CA, "--token-file", tokFile)
	if !strings.Contains(out, "context lab created") || !strings.Contains(out, "current context: lab") {
		t.Fatalf("set-context: %s", out)
	}
	if fi, err := os.Stat(cfgFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v %v", fi, err)
	}
	if !strings.Contains(mustRun(t, env, "", "secret", "ls"), "payments/db") {
		t.Fatal("the context does not reach the server")
	}
	if out := mustRun(t, env, "", "secret", "ls", "--context", "lab"); !strings.Contains(out, "payments/db") {
		t.Fatal("--context lab")
	}
	mustRun(t, env, "", "config", "set-context", "dead", "--addr", "https://"+deadAddr, "--cacert", s.CA, "--token-file", tokFile)
	if out := mustRun(t, env, "", "config", "current-context"); out != "lab\n" {
		t.Fatalf("a second set-context switched: %q", out)
	}
	ls := mustRun(t, env, "", "config", "get-contexts")
	if !regexp.MustCompile(`\*\s+lab\s+`+regexp.QuoteMeta(s.Addr)).MatchString(ls) || !strings.Contains(ls, tokFile) {
		t.Fatalf("get-contexts:\n%s", ls)
	}
	noToken("get-contexts", ls)
	view := mustRun(t, env, "", "config", "view")
	if !strings.Contains(view, "token-file: "+tokFile) || !strings.Contains(view, "current-context: lab") {
		t.Fatalf("config view:\n%s", view)
	}
	noToken("config view", view)

	// A dead server: exit 5, saying which context pointed there.
	_, errOut, code := cliRun(t, env, "", "secret", "ls", "--context", "dead")
	if code != 5 || !strings.Contains(errOut, `cannot reach the server at https://`+deadAddr+` (from context "dead")`) {
		t.Fatalf("dead context: exit %d %s", code, errOut)
	}
	mustRun(t, env, "", "config", "use-context", "dead")
	if _, _, code := cliRun(t, env, "", "secret", "ls"); code != 5 {
		t.Fatalf("current context dead: exit %d", code)
	}
	// The environment beats the context; a flag beats the environment.
	withEnv := append(env, "COFFER_ADDR=https://"+s.Addr)
	if !strings.Contains(mustRun(t, withEnv, "", "secret", "ls"), "payments/db") {
		t.Fatal("COFFER_ADDR did not override the context")
	}
	if _, _, code := cliRun(t, withEnv, "", "secret", "ls", "--addr", deadAddr); code != 5 {
		t.Fatalf("--addr did not override COFFER_ADDR: exit %d", code)
	}
	if _, _, code := cliRun(t, append(withEnv, "COFFER_TOKEN=coffer_0000000000000000_AAAA"), "", "secret", "ls"); code != 4 {
		t.Fatalf("COFFER_TOKEN did not override the context's token file: exit %d", code)
	}

	// Unknown contexts are usage errors that list the known ones.
	for _, tc := range []struct {
		env  []string
		args []string
	}{
		{env, []string{"config", "use-context", "nope"}},
		{env, []string{"secret", "ls", "--context", "nope"}},
		{append(env, "COFFER_CONTEXT=nope"), []string{"secret", "ls"}},
		{env, []string{"config", "delete-context", "nope"}},
	} {
		_, errOut, code := cliRun(t, tc.env, "", tc.args...)
		if code != 2 || !strings.Contains(errOut, `"nope"`) || !strings.Contains(errOut, "lab, dead") {
			t.Errorf("%v: exit %d %s", tc.args, code, errOut)
		}
	}
	if _, errOut, code := cliRun(t, env, "", "config", "set-context", "x", "--addr", "http://insecure:1"); code != 2 || !strings.Contains(errOut, "https://host:port") {
		t.Errorf("set-context http://: exit %d %s", code, errOut)
	}
	if _, _, code := cliRun(t, env, "", "config", "set-context", "x", "--token-file", filepath.Join(dir, "missing")); code != 2 {
		t.Errorf("set-context with a missing token file: exit %d", code)
	}
	mustRun(t, env, "", "config", "use-context", "lab")

	// Readable config and token files work, with a warning.
	os.Chmod(cfgFile, 0o644)
	os.Chmod(tokFile, 0o640)
	out, errOut, code = cliRun(t, env, "", "secret", "ls")
	if code != 0 || !strings.Contains(out, "payments/db") || !strings.Contains(errOut, "warning: config file "+cfgFile+" has mode 0644") ||
		!strings.Contains(errOut, "token file "+tokFile+" has mode 0640") || !strings.Contains(errOut, "chmod 600") {
		t.Fatalf("readable files: exit %d\n%s\n%s", code, out, errOut)
	}
	os.Chmod(cfgFile, 0o600)
	os.Chmod(tokFile, 0o600)
	if _, errOut, _ := cliRun(t, env, "", "secret", "ls"); errOut != "" {
		t.Fatalf("private files still warned: %s", errOut)
	}

	// --token-file on a server command, without any context.
	bare := []string{"XDG_CONFIG_HOME=" + t.TempDir(), "COFFER_ADDR=" + s.Addr, "COFFER_CACERT=" + s.CA}
	if !strings.Contains(mustRun(t, bare, "", "bind", "ls", "--token-file", tokFile), "NAME") {
		t.Fatal("--token-file")
	}
	if !strings.Contains(mustRun(t, append(bare, "COFFER_TOKEN_FILE="+tokFile), "", "secret", "ls"), "payments/db") {
		t.Fatal("COFFER_TOKEN_FILE")
	}

	// A hand-written inline token is used, and redacted everywhere.
	b, _ := os.ReadFile(cfgFile)
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["contexts"] = append(cfg["contexts"].([]any), map[string]any{"name": "inline", "addr": s.Addr, "cacert": s.CA, "token": s.Token})
	b, _ = yaml.Marshal(cfg)
	os.WriteFile(cfgFile, b, 0o600)
	for _, args := range [][]string{{"config", "view"}, {"config", "view", "-o", "json"}, {"config", "get-contexts"}, {"config", "get-contexts", "-o", "yaml"}, {"whoami", "--context", "inline"}, {"whoami", "--context", "inline", "-o", "json"}} {
		out := mustRun(t, env, "", args...)
		noToken(strings.Join(args, " "), out)
		if args[0] == "config" && !strings.Contains(out, "REDACTED") {
			t.Errorf("%v: no REDACTED:\n%s", args, out)
		}
	}
	who := mustRun(t, env, "", "whoami")
	if !strings.Contains(who, "Role:     admin") || !strings.Contains(who, "(context lab)") || !strings.Contains(who, `from context "lab" token-file `+tokFile) {
		t.Fatalf("whoami:\n%s", who)
	}
	noToken("whoami", who)
	mustRun(t, env, "", "config", "delete-context", "inline")
	if strings.Contains(mustRun(t, env, "", "config", "get-contexts"), "inline") {
		t.Fatal("delete-context")
	}
}

// TestCLIWhoamiVersionsAndCompletion: whoami of a scoped token, version on
// every binary, and shell completion of names from the server (and silence
// when there is no server).
func TestCLIWhoamiVersionsAndCompletion(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	dir := t.TempDir()
	s := testkit.StartServer(t, filepath.Join(dir, "data"))
	env := envFor(t, s, s.Token, "")
	mustRun(t, env, "v", "secret", "put", "payments/db")
	mustRun(t, env, "v", "secret", "put", "billing/db")
	mustRun(t, env, "", "bind", "create", "web-db", "--secret", "payments/db", "--selector", "app=web")
	scoped := strings.TrimSpace(mustRun(t, env, "", "token", "create", "--role", "operator", "--scope", "payments/*", "--ttl", "30d"))
	var tok struct {
		ID string `json:"id"`
	}
	json.Unmarshal([]byte(mustRun(t, env, "", "token", "create", "--role", "viewer", "--ttl", "1h", "-o", "json")), &tok)

	who := mustRun(t, envFor(t, s, scoped, ""), "", "whoami")
	if !strings.Contains(who, "Role:     operator") || !strings.Contains(who, "Scope:    payments/") || !regexp.MustCompile(`Expires:  \S+ \(in (29|30)d\)`).MatchString(who) ||
		strings.Contains(who, scoped[10:]) || strings.Contains(who, "token.manage") {
		t.Fatalf("scoped whoami:\n%s", who)
	}

	for _, bin := range []string{"coffer", "coffer-server", "coffer-agent"} {
		out, _, code := binRun(t, bin, nil, "", "--version")
		if code != 0 || !strings.HasPrefix(out, bin+" ") || !strings.Contains(out, "commit ") || !strings.Contains(out, "go1.") {
			t.Errorf("%s --version: exit %d %q", bin, code, out)
		}
	}
	var v map[string]string
	if err := json.Unmarshal([]byte(mustRun(t, nil, "", "version", "-o", "json")), &v); err != nil || v["version"] == "" || v["commit"] == "" || !strings.HasPrefix(v["go"], "go1.") {
		t.Fatalf("version -o json: %v %v", v, err)
	}

	complete := func(env []string, args ...string) []string {
		t.Helper()
		out, _, code := cliRun(t, env, "", append([]string{"__complete"}, args...)...)
		if code != 0 {
			t.Fatalf("__complete %v: exit %d", args, code)
		}
		var vals []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if l != "" && !strings.HasPrefix(l, ":") {
				vals = append(vals, strings.SplitN(l, "\t", 2)[0])
			}
		}
		return vals
	}
	for _, tc := range []struct {
		env  []string
		args []string
		want []string
	}{
		{env, []string{"secret", "show", ""}, []string{"billing/db", "payments/db"}},
		{env, []string{"secret", "rm", "pay"}, []string{"payments/db"}},
		{envFor(t, s, scoped, ""), []string{"secret", "put", ""}, []string{"payments/db"}},
		{env, []string{"bind", "rm", ""}, []string{"web-db"}},
		{env, []string{"bind", "create", "x", "--secret", "b"}, []string{"billing/db"}},
		{env, []string{"bind", "create", ""}, nil},
		{env, []string{"token", "revoke", tok.ID[:4]}, []string{tok.ID}},
		{env, []string{"token", "create", "--role", ""}, []string{"admin", "operator", "auditor", "viewer", "agent"}},
		{env, []string{"secret", "ls", "-o", ""}, []string{"table", "json", "yaml"}},
		{env, []string{"secret", "show", "payments/db", ""}, nil},
		{append(env, "COFFER_ADDR=https://"+testkit.FreeAddr(t)), []string{"secret", "show", ""}, nil},
		{[]string{"XDG_CONFIG_HOME=" + t.TempDir()}, []string{"bind", "rm", ""}, nil},
	} {
		if got := complete(tc.env, tc.args...); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("complete %q: %q, want %q", tc.args, got, tc.want)
		}
	}
	if out := mustRun(t, env, "", "completion", "bash"); !strings.Contains(out, "__start_coffer") {
		t.Fatal("completion bash")
	}
}

// TestCLITokenTTL: --ttl takes days and weeks; 0s is refused (nothing
// made); "never" is explicit; leaving --ttl out says on stderr that the
// token never expires.
func TestCLITokenTTL(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	s := testkit.StartServer(t, filepath.Join(t.TempDir(), "data"))
	env := envFor(t, s, s.Token, "")
	for ttl, want := range map[string]time.Duration{"30d": 30 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "1d12h": 36 * time.Hour} {
		var tok struct {
			Created time.Time `json:"created"`
			Expires time.Time `json:"expires"`
		}
		out, errOut, code := cliRun(t, env, "", "token", "create", "--role", "viewer", "--ttl", ttl, "-o", "json")
		if code != 0 || json.Unmarshal([]byte(out), &tok) != nil || tok.Expires.Sub(tok.Created) != want || errOut != "" {
			t.Errorf("--ttl %s: exit %d: %s %s", ttl, code, out, errOut)
		}
	}
	before := strings.Count(mustRun(t, env, "", "token", "ls"), "\n")
	for _, tc := range []struct{ args, msg string }{
		{"--role viewer --ttl 0s", `use "never"`},
		{"--role viewer --ttl 30", "30d or 2w"},
		{"--role viewer --ttl -1h", "30d or 2w"},
		{"--role agent --ttl never", "a join token must expire"},
	} {
		_, errOut, code := cliRun(t, env, "", append([]string{"token", "create"}, strings.Fields(tc.args)...)...)
		if code != 2 || !strings.Contains(errOut, "--ttl") || !strings.Contains(errOut, tc.msg) {
			t.Errorf("%s: exit %d %s", tc.args, code, errOut)
		}
	}
	if after := strings.Count(mustRun(t, env, "", "token", "ls"), "\n"); after != before {
		t.Fatalf("refused --ttl made tokens: %d → %d lines", before, after)
	}
	out, errOut, code := cliRun(t, env, "", "token", "create", "--role", "viewer", "--ttl", "never", "-o", "json")
	if code != 0 || strings.Contains(out, "expires") || errOut != "" {
		t.Fatalf("--ttl never: exit %d %s %s", code, out, errOut)
	}
	out, errOut, code = cliRun(t, env, "", "token", "create", "--role", "viewer")
	if code != 0 || !strings.HasPrefix(out, "coffer_") || !strings.Contains(errOut, "never expires") {
		t.Fatalf("no --ttl: exit %d %q %q", code, out, errOut)
	}
}

// TestAgentTakesTheCLIsFlagSpellings: coffer-agent accepts --addr
// https://host:port and --cacert (the CLI's names) as well as --server and
// --ca-cert, and the CLI accepts the agent's.
func TestAgentTakesTheCLIsFlagSpellings(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	dir := t.TempDir()
	s := testkit.StartServer(t, filepath.Join(dir, "data"))
	bare := []string{"XDG_CONFIG_HOME=" + t.TempDir(), "COFFER_TOKEN=" + s.Token}
	out := mustRun(t, bare, "", "token", "create", "--role", "agent", "--ttl", "1h", "--server", s.Addr, "--ca-cert", s.CA)
	join := strings.TrimSpace(out)

	if _, errOut, code := binRun(t, "coffer-agent", nil, "", "--addr", "https://"+s.Addr+"/v1", "--cacert", s.CA); code == 0 || !strings.Contains(errOut, "want host:port") {
		t.Fatalf("agent with a path in --addr: exit %d %s", code, errOut)
	}
	p := testkit.Start(t, testkit.Bin(t, "coffer-agent"), "--addr", "https://"+s.Addr, "--cacert", s.CA, "--join-token", join,
		"--state-dir", filepath.Join(dir, "agent"), "--name", "alias-node", "--only-labels", "coffer.test.alias-spelling=1", "--target-dir", filepath.Join(dir, "target"))
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(mustRun(t, bare, "", "agent", "ls", "--addr", s.Addr, "--cacert", s.CA), "alias-node") {
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not enroll with --addr/--cacert:\n%s", p.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.Stop()
	// Completion offers the agent's name.
	out, _, code := cliRun(t, append(bare, "COFFER_ADDR="+s.Addr, "COFFER_CACERT="+s.CA), "", "__complete", "agent", "rm", "")
	if code != 0 || !strings.HasPrefix(out, "alias-node") {
		t.Fatalf("complete agent rm: exit %d %q", code, out)
	}
}
