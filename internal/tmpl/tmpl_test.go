package tmpl

import (
	"errors"
	"strings"
	"testing"

	"coffer/internal/secret"
)

func vals(kv ...string) map[string]secret.Value {
	m := map[string]secret.Value{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = secret.Value(kv[i+1])
	}
	return m
}

func TestRender(t *testing.T) {
	src := `postgres://{{ secret "payments/db-user" | urlquery }}:{{ secret "payments/db-password" | urlquery }}@db:5432/app
key={{ secret "payments/key" | base64 }}
json={{ secret "payments/db-user" | json }}
opt={{ secret "payments/empty" | default "none" }}
trim={{ secret "payments/spaced" | trim }}
{{ if secret "payments/db-user" }}has-user{{ end }}`
	tp, err := Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(tp.Inputs(), ","); got != "payments/db-password,payments/db-user,payments/empty,payments/key,payments/spaced" {
		t.Fatalf("inputs: %s", got)
	}
	out, err := tp.Render(vals("payments/db-user", "app user", "payments/db-password", "p@ss/word", "payments/key", "\x00\x01bin",
		"payments/empty", "", "payments/spaced", "  x  "), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := `postgres://app+user:p%40ss%2Fword@db:5432/app
key=AAFiaW4=
json="app user"
opt=none
trim=x
has-user`
	if string(out) != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out, want)
	}
}

func TestParseRefuses(t *testing.T) {
	for src, want := range map[string]string{
		`{{ range 1000000000 }}x{{ end }}{{ secret "a" }}`: "range is not allowed",
		`{{ define "x" }}{{ end }}{{ secret "a" }}`:        "define",
		`{{ template "x" }}`:                               "template calls",
		`{{ secret .Name }}`:                               "quoted name",
		`{{ $x := secret "a" }}{{ $x }}`:                   "variables",
		`{{ exec "rm" }}`:                                  `function "exec" not defined`,
		`{{ secret "a" "b" }}`:                             "one argument",
		`{{ secret "Bad Name" }}`:                          "invalid",
		`no secrets here`:                                  "reads no secret",
		`{{ secret "a" `:                                   "unclosed",
		`{{ .Field }}`:                                     "no data",
		strings.Repeat("x", MaxSource+1):                   "limit",
		`{{ printf "%d" (secret "a") }}`:                   "function printf is not allowed",
		"{{ secret \"a\" }}\xff":                           "UTF-8",
	} {
		_, err := Parse(src)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("%.40q: %v, want %q", src, err, want)
		}
	}
	var many strings.Builder
	for i := range MaxInputs + 1 {
		many.WriteString(`{{ secret "s/` + string(rune('a'+i%26)) + strings.Repeat("x", i/26) + `" }}`)
	}
	if _, err := Parse(many.String()); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("too many inputs: %v", err)
	}
}

func TestRenderRefusesBinaryTooLargeAndEmpty(t *testing.T) {
	tp, _ := Parse(`{{ secret "k" }}`)
	if _, err := tp.Render(vals("k", "\xff\xfe"), 100); err == nil || !strings.Contains(err.Error(), "binary") || strings.Contains(err.Error(), "\xff") {
		t.Errorf("binary printed raw: %v", err)
	}
	if _, err := tp.Render(vals("k", "abc\x00"), 100); err == nil || !strings.Contains(err.Error(), "binary") {
		t.Errorf("NUL printed raw: %v", err)
	}
	if _, err := tp.Render(vals("k", strings.Repeat("x", 101)), 100); err == nil || !strings.Contains(err.Error(), "larger") {
		t.Errorf("over the cap: %v", err)
	}
	if _, err := tp.Render(vals("k", ""), 100); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty: %v", err)
	}
	if _, err := tp.Render(vals(), 100); err == nil {
		t.Error("a missing input rendered")
	}
	// Amplification is bounded by the cap, not by time: 32 inputs of 1 MiB
	// printed into a 1 KiB cap stop at the cap.
	big, _ := Parse(strings.Repeat(`{{ secret "k" }}`, 1000))
	if _, err := big.Render(vals("k", strings.Repeat("y", 1<<20)), 1<<10); err == nil {
		t.Error("amplified past the cap")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`{{ secret "a/b" | base64 }}`)
	f.Add(`{{ if secret "x" }}{{ secret "y" | default "z" }}{{ else }}n{{ end }}`)
	f.Add(`{{ range 3 }}{{ end }}`)
	f.Fuzz(func(t *testing.T, src string) {
		tp, err := Parse(src)
		if err != nil {
			return
		}
		m := map[string]secret.Value{}
		for _, in := range tp.Inputs() {
			m[in] = secret.Value("v")
		}
		out, err := tp.Render(m, 1<<16)
		if err == nil && len(out) > 1<<16 {
			t.Fatalf("rendered %d bytes past the cap", len(out))
		}
	})
}
