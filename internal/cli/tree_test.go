package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// TestEveryCommandHasAnExample walks the whole command tree: every command
// a user can run (groups excepted: their help lists their commands) has
// examples in its --help.
func TestEveryCommandHasAnExample(t *testing.T) {
	root := NewRoot(io.Discard, io.Discard)
	n := 0
	walk(root, func(cmd *cobra.Command) {
		if cmd.Hidden || cmd.HasSubCommands() || !cmd.Runnable() {
			return
		}
		n++
		if strings.TrimSpace(cmd.Example) == "" {
			t.Errorf("%s has no Example", cmd.CommandPath())
		}
	})
	if n < 25 {
		t.Fatalf("walked only %d commands", n)
	}
	// And --help shows them.
	var out bytes.Buffer
	if code := Main([]string{"completion", "bash", "--help"}, nil, &out, io.Discard); code != 0 || !strings.Contains(out.String(), "Examples:") {
		t.Fatalf("completion bash --help: exit %d\n%s", code, out.String())
	}
}

// TestUnknownSubcommandsAreUsageErrors: a group given an unknown command
// (coffer bind frob x), and help on an unknown topic, exit 2 instead of
// printing help and exiting 0; a group alone prints its help.
func TestUnknownSubcommandsAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"bind", "frob", "x"}, {"secret", "lss"}, {"config", "nope"}, {"help", "nope"}, {"help", "secret", "nope"}, {"nope"}, {"completion", "tcsh"}} {
		var errOut bytes.Buffer
		if code := Main(args, nil, io.Discard, &errOut); code != ExitUsage || !strings.Contains(errOut.String(), "unknown") {
			t.Errorf("coffer %v: exit %d: %s", args, code, errOut.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := Main([]string{"secret", "lss"}, nil, &out, &errOut); !strings.Contains(errOut.String(), `did you mean ls?`) {
		t.Errorf("no suggestion: exit %d %s", code, errOut.String())
	}
	out.Reset()
	if code := Main([]string{"bind"}, nil, &out, io.Discard); code != 0 || !strings.Contains(out.String(), "Available Commands") {
		t.Errorf("coffer bind: exit %d\n%s", code, out.String())
	}
}

func TestExitCodeOfServerAnswers(t *testing.T) {
	for status, want := range map[int]int{
		http.StatusBadRequest: ExitUsage, http.StatusRequestEntityTooLarge: ExitUsage,
		http.StatusNotFound:     ExitNotFound,
		http.StatusUnauthorized: ExitDenied, http.StatusForbidden: ExitDenied, http.StatusTooManyRequests: ExitDenied,
		http.StatusConflict:            ExitConflict,
		http.StatusInternalServerError: ExitFailure, http.StatusServiceUnavailable: ExitFailure,
	} {
		err := fmt.Errorf("context: %w", &apiError{Status: status, Msg: "m"})
		if got := ExitCode(err); got != want {
			t.Errorf("HTTP %d: exit %d, want %d", status, got, want)
		}
	}
	if ExitCode(errors.New("x")) != ExitFailure || ExitCode(nil) != ExitOK || ExitCode(usageError(errors.New("u"))) != ExitUsage {
		t.Fatal("plain errors")
	}
}

// TestErrorsAsObjects: with -o json or yaml, an error is an object on
// stderr with the exit code (and the HTTP status when the server answered).
func TestErrorsAsObjects(t *testing.T) {
	cmd := &cobra.Command{Use: "x"}
	o := &output{}
	o.flag(cmd)
	var buf bytes.Buffer
	report(&buf, cmd, &apiError{Status: 404, Msg: "secret a: not found"}, ExitNotFound)
	if buf.String() != "coffer: secret a: not found (HTTP 404)\n" {
		t.Fatalf("text: %q", buf.String())
	}
	for _, f := range []string{"json", "yaml"} {
		o.Set(f)
		buf.Reset()
		report(&buf, cmd, fmt.Errorf("wrapped: %w", &apiError{Status: 404, Msg: "secret <a>: not found"}), ExitNotFound)
		var got map[string]any
		if err := yaml.Unmarshal(buf.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, map[string]any{"error": "secret <a>: not found", "code": 3, "status": 404}) {
			t.Errorf("%s: %q", f, buf.String())
		}
	}
	buf.Reset()
	o.Set("json")
	report(&buf, cmd, usageError(errors.New("--role: unknown")), ExitUsage)
	if strings.TrimSpace(buf.String()) != "{\n  \"error\": \"--role: unknown\",\n  \"code\": 2\n}" {
		t.Errorf("usage error: %q", buf.String())
	}
	buf.Reset()
	report(&buf, cmd, &ExitError{Code: 1}, 1) // nothing to say
	if buf.Len() != 0 {
		t.Errorf("silent error printed %q", buf.String())
	}
}

// TestPrintPassesTheServersAnswerThrough: what a command decoded and
// prints unchanged is printed as the server wrote it (unknown fields kept,
// nothing added); what it changed or made up is encoded.
func TestPrintPassesTheServersAnswerThrough(t *testing.T) {
	c := &conn{}
	raw := []byte(`[{"name":"a","current_version":2,"future_field":{"x":1}}]`)
	var ms []secretMeta
	if err := json.Unmarshal(raw, &ms); err != nil {
		t.Fatal(err)
	}
	c.answers.record(raw, &ms)
	o := &output{format: formatJSON, conn: c}
	var buf bytes.Buffer
	if err := o.print(&buf, ms, nil, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"future_field"`) || strings.Contains(buf.String(), `"holders"`) {
		t.Fatalf("not the server's answer:\n%s", buf.String())
	}
	// A changed value is not the answer any more.
	ms[0].Current = 7
	buf.Reset()
	o.print(&buf, ms, nil, nil)
	if strings.Contains(buf.String(), "future_field") || !strings.Contains(buf.String(), `"current_version": 7`) {
		t.Fatalf("changed value printed as the old answer:\n%s", buf.String())
	}
	// Pointers and values alike; YAML too.
	ms[0].Current = 2
	buf.Reset()
	o.format = formatYAML
	o.print(&buf, &ms, nil, nil)
	if !strings.Contains(buf.String(), "future_field:\n    x: 1") {
		t.Fatalf("yaml:\n%s", buf.String())
	}
}

func TestJSONToYAMLKeepsTypesAndOrder(t *testing.T) {
	got, err := jsonToYAML([]byte(`{"z":"123","a":true,"s":"true","n":null,"f":1.5,"l":[1,"2"],"e":{},"t":"2026-01-02T15:04:05Z","m":"line1\nline2"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := "z: \"123\"\na: true\ns: \"true\"\nn: null\nf: 1.5\nl:\n  - 1\n  - \"2\"\ne: {}\nt: \"2026-01-02T15:04:05Z\"\nm: |-\n  line1\n  line2\n"
	if string(got) != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestParseAddrAndAliases(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:7443": "https://127.0.0.1:7443", "https://coffer.example.com:7443": "https://coffer.example.com:7443",
		"https://[::1]:7443/": "https://[::1]:7443/",
	} {
		u, err := parseAddr(in)
		if err != nil || u.String() != want {
			t.Errorf("parseAddr(%q) = %v, %v", in, u, err)
		}
	}
	for _, in := range []string{"http://127.0.0.1:7443", "https://", "https://h:1/v1", "https://u:p@h:1", "ftp://h"} {
		if _, err := parseAddr(in); err == nil {
			t.Errorf("parseAddr(%q) accepted", in)
		}
	}
	for in, want := range map[string]string{"server": "addr", "ca-cert": "cacert", "addr": "addr", "token-file": "token-file"} {
		if got := string(flagAliases(nil, in)); got != want {
			t.Errorf("alias %s = %s", in, got)
		}
	}
}

// cleanEnv points the config file at dir and clears COFFER_* for a test.
func cleanEnv(t *testing.T, dir string) {
	for _, k := range []string{"COFFER_ADDR", "COFFER_CACERT", "COFFER_TOKEN", "COFFER_TOKEN_FILE", "COFFER_CONTEXT", "COFFER_CONFIG"} {
		t.Setenv(k, "")
	}
	t.Setenv("XDG_CONFIG_HOME", dir)
}

// TestSettingsPrecedence: flags beat the environment, which beats the
// context, setting by setting.
func TestSettingsPrecedence(t *testing.T) {
	dir := t.TempDir()
	cleanEnv(t, dir)
	tokFile := filepath.Join(dir, "ctx.token")
	os.WriteFile(tokFile, []byte("coffer_ctx\n"), 0o600)
	flagTok := filepath.Join(dir, "flag.token")
	os.WriteFile(flagTok, []byte("coffer_flagfile"), 0o600)
	cfg := &Config{CurrentContext: "a", Contexts: []Context{
		{Name: "a", Addr: "https://ctx-a:1", CACert: "/ctx/ca.pem", TokenFile: tokFile},
		{Name: "b", Addr: "https://ctx-b:1", Token: "coffer_inline"},
	}}
	path, _ := configPath()
	if path != filepath.Join(dir, "coffer", "config.yaml") {
		t.Fatalf("config path %s", path)
	}
	if err := saveConfig(path, cfg); err != nil {
		t.Fatal(err)
	}
	resolve := func(c *conn) target {
		t.Helper()
		tg, err := c.resolve()
		if err != nil {
			t.Fatal(err)
		}
		return tg
	}
	tg := resolve(&conn{})
	if tg.addr != "https://ctx-a:1" || tg.cacert != "/ctx/ca.pem" || tg.token != "coffer_ctx" || tg.context != "a" {
		t.Fatalf("context only: %+v", tg)
	}
	t.Setenv("COFFER_ADDR", "https://env:1")
	t.Setenv("COFFER_TOKEN", "coffer_env")
	tg = resolve(&conn{})
	if tg.addr != "https://env:1" || tg.cacert != "/ctx/ca.pem" || tg.token != "coffer_env" || tg.tokenFrom != "COFFER_TOKEN" {
		t.Fatalf("env over context: %+v", tg)
	}
	tg = resolve(&conn{addr: "flag:1", tokenFile: flagTok, cacert: "/flag/ca.pem"})
	if tg.addr != "flag:1" || tg.addrFrom != "--addr" || tg.cacert != "/flag/ca.pem" || tg.token != "coffer_flagfile" {
		t.Fatalf("flags over env: %+v", tg)
	}
	t.Setenv("COFFER_CONTEXT", "b")
	t.Setenv("COFFER_ADDR", "")
	t.Setenv("COFFER_TOKEN", "")
	if tg = resolve(&conn{}); tg.addr != "https://ctx-b:1" || tg.token != "coffer_inline" || tg.cacert != "" {
		t.Fatalf("COFFER_CONTEXT: %+v", tg)
	}
	if tg = resolve(&conn{context: "a"}); tg.addr != "https://ctx-a:1" {
		t.Fatalf("--context over COFFER_CONTEXT: %+v", tg)
	}
	if _, err := (&conn{context: "nope"}).resolve(); ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), `context "nope"`) || !strings.Contains(err.Error(), "known: a, b") {
		t.Fatalf("unknown context: %v", err)
	}
	if _, err := (&conn{token: "x", tokenFile: flagTok}).resolve(); ExitCode(err) != ExitUsage {
		t.Fatalf("--token and --token-file: %v", err)
	}
	if _, err := (&conn{tokenFile: filepath.Join(dir, "missing")}).resolve(); ExitCode(err) != ExitUsage {
		t.Fatalf("missing token file: %v", err)
	}
	// Nothing configured at all: the default address, no token.
	cleanEnv(t, t.TempDir())
	if tg = resolve(&conn{}); tg.addr != defaultAddr || tg.token != "" || tg.context != "" {
		t.Fatalf("nothing configured: %+v", tg)
	}
}

// TestConfigFileIsCheckedAndPrivate: the file is written 0600 in a 0700
// directory; a readable one draws a warning; unknown keys, duplicate or
// bad names, and a current-context that names nothing are usage errors.
func TestConfigFileIsCheckedAndPrivate(t *testing.T) {
	dir := t.TempDir()
	cleanEnv(t, dir)
	path, _ := configPath()
	if err := saveConfig(path, &Config{Contexts: []Context{{Name: "a"}}}); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	di, _ := os.Stat(filepath.Dir(path))
	if fi.Mode().Perm() != 0o600 || di.Mode().Perm() != 0o700 {
		t.Fatalf("modes %v %v", fi.Mode(), di.Mode())
	}
	var warn bytes.Buffer
	os.Chmod(path, 0o644)
	if _, _, err := (&conn{errOut: &warn}).loadConfig(); err != nil || !strings.Contains(warn.String(), "mode 0644") || !strings.Contains(warn.String(), "chmod 600") {
		t.Fatalf("no warning: %v %q", err, warn.String())
	}
	warn.Reset()
	os.Chmod(path, 0o400)
	if _, _, err := (&conn{errOut: &warn}).loadConfig(); err != nil || warn.Len() != 0 {
		t.Fatalf("0400 warned: %v %q", err, warn.String())
	}
	os.Chmod(path, 0o600)
	for text, msg := range map[string]string{
		"contexts:\n  - name: a\n    adress: x\n":         "adress",
		"contexts:\n  - name: a\n  - name: a\n":           "given twice",
		"contexts:\n  - name: 'bad name'\n":               "bad name",
		"current-context: gone\ncontexts:\n  - name: a\n": `context "gone"`,
		"contexts: [": "config file",
	} {
		os.WriteFile(path, []byte(text), 0o600)
		_, err := (&conn{}).resolve()
		if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: %v", text, err)
		}
	}
	os.WriteFile(path, nil, 0o600)
	if _, err := (&conn{}).resolve(); err != nil {
		t.Fatalf("empty file: %v", err)
	}
}
