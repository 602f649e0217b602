package runcwrap

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func ourHook() Hook {
	ten := 10
	return Hook{Path: "/usr/local/bin/coffer-agent", Args: []string{"/usr/local/bin/coffer-agent", "hook", "--socket", "/run/coffer/hook.sock"}, Timeout: &ten}
}

func TestExtend(t *testing.T) {
	other := `{"path":"/bin/other","args":["other"]}`
	for name, tc := range map[string]struct {
		spec      string
		patch     Patch
		wantHooks int
		wantAnn   map[string]string
		wantErr   string
	}{
		"no hooks":       {spec: `{"ociVersion":"1.0.2","process":{"args":["sh"]},"root":{"path":"/r"}}`, patch: Patch{Hook: ourHook()}, wantHooks: 1},
		"null hooks":     {spec: `{"hooks":null}`, patch: Patch{Hook: ourHook()}, wantHooks: 1},
		"another hook":   {spec: `{"hooks":{"createRuntime":[` + other + `],"poststop":[` + other + `]}}`, patch: Patch{Hook: ourHook()}, wantHooks: 2},
		"ours already":   {spec: `{"hooks":{"createRuntime":[{"path":"/usr/local/bin/coffer-agent","args":["/usr/local/bin/coffer-agent","hook","--socket","/run/coffer/hook.sock"]}]}}`, patch: Patch{Hook: ourHook()}, wantHooks: 1},
		"annotation":     {spec: `{"annotations":{"a":"b"}}`, patch: Patch{Hook: ourHook(), Annotations: map[string]string{"coffer/require-secrets": "true"}}, wantHooks: 1, wantAnn: map[string]string{"a": "b", "coffer/require-secrets": "true"}},
		"new annotation": {spec: `{}`, patch: Patch{Hook: ourHook(), Annotations: map[string]string{"coffer/require-secrets": "true"}}, wantHooks: 1, wantAnn: map[string]string{"coffer/require-secrets": "true"}},
		"not an object":  {spec: `[1]`, wantErr: "not a JSON object"},
		"null":           {spec: `null`, wantErr: "not a JSON object"},
		"trailing":       {spec: `{} {}`, wantErr: "not a JSON object"},
		"garbage":        {spec: "\x00", wantErr: "not a JSON object"},
		"hooks array":    {spec: `{"hooks":[]}`, wantErr: `"hooks"`},
		"bad hook list":  {spec: `{"hooks":{"createRuntime":{}}}`, wantErr: `"hooks.createRuntime"`},
		"bad hook":       {spec: `{"hooks":{"createRuntime":[1]}}`, wantErr: `"hooks.createRuntime[0]"`},
		"bad annotation": {spec: `{"annotations":{"a":1}}`, patch: Patch{Annotations: map[string]string{"k": "v"}}, wantErr: `"annotations"`},
	} {
		t.Run(name, func(t *testing.T) {
			out, err := Extend([]byte(tc.spec), tc.patch)
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrBadSpec) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want ErrBadSpec with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var in, got map[string]any
			_ = json.Unmarshal([]byte(tc.spec), &in)
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			for k, v := range in { // every other member is kept
				if k != "hooks" && k != "annotations" && !reflect.DeepEqual(got[k], v) {
					t.Errorf("member %s changed: %v → %v", k, v, got[k])
				}
			}
			var s struct {
				Hooks       map[string][]Hook `json:"hooks"`
				Annotations map[string]string `json:"annotations"`
			}
			_ = json.Unmarshal(out, &s)
			if n := len(s.Hooks["createRuntime"]); n != tc.wantHooks {
				t.Fatalf("%d createRuntime hooks, want %d: %s", n, tc.wantHooks, out)
			}
			last := s.Hooks["createRuntime"][tc.wantHooks-1]
			if last.Path != ourHook().Path || !reflect.DeepEqual(last.Args, ourHook().Args) {
				t.Errorf("last hook %+v", last)
			}
			if strings.Contains(tc.spec, "poststop") && len(s.Hooks["poststop"]) != 1 {
				t.Errorf("other hooks lost: %s", out)
			}
			if tc.wantAnn != nil && !reflect.DeepEqual(s.Annotations, tc.wantAnn) {
				t.Errorf("annotations %v, want %v", s.Annotations, tc.wantAnn)
			}
			// Applying it twice changes nothing more.
			again, err := Extend(out, tc.patch)
			if err != nil || string(again) != string(out) {
				t.Errorf("not idempotent: %v\n%s\n%s", err, out, again)
			}
		})
	}
}

func FuzzExtend(f *testing.F) {
	f.Add([]byte(`{"hooks":{"createRuntime":[{"path":"/x"}]},"annotations":{"a":"b"}}`))
	f.Add([]byte(`{"process":{"env":["A=B"]}}`))
	f.Fuzz(func(t *testing.T, spec []byte) {
		out, err := Extend(spec, Patch{Hook: ourHook(), Annotations: map[string]string{"coffer/require-secrets": "true"}})
		if err != nil {
			return
		}
		// Other hook kinds are kept as they were, whatever they hold
		// (runc judges them).
		var s struct {
			Hooks struct {
				CreateRuntime []Hook `json:"createRuntime"`
			} `json:"hooks"`
			Annotations map[string]string `json:"annotations"`
		}
		if err := json.Unmarshal(out, &s); err != nil {
			t.Fatalf("output is no spec: %v", err)
		}
		found := false
		for _, h := range s.Hooks.CreateRuntime {
			found = found || h.Path == ourHook().Path
		}
		if !found || s.Annotations["coffer/require-secrets"] != "true" {
			t.Fatalf("patch not applied: %s", out)
		}
	})
}

func TestReadWriteSpec(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := ReadSpec(dir); !errors.Is(err, ErrBadSpec) {
		t.Fatalf("missing: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{}`), 0o640); err != nil {
		t.Fatal(err)
	}
	b, perm, err := ReadSpec(dir)
	if err != nil || string(b) != `{}` || perm != 0o640 {
		t.Fatalf("read: %q %v %v", b, perm, err)
	}
	if err := WriteSpec(dir, []byte(`{"a":1}`), perm); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(dir, "config.json"))
	if b, _, _ := ReadSpec(dir); string(b) != `{"a":1}` || fi.Mode().Perm() != 0o640 {
		t.Fatalf("after write: %q %v", b, fi.Mode())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
	// A symlinked or oversized config.json is refused.
	link := t.TempDir()
	_ = os.Symlink(filepath.Join(dir, "config.json"), filepath.Join(link, "config.json"))
	if _, _, err := ReadSpec(link); !errors.Is(err, ErrBadSpec) {
		t.Errorf("symlink: %v", err)
	}
	big := t.TempDir()
	_ = os.WriteFile(filepath.Join(big, "config.json"), make([]byte, MaxSpecBytes+1), 0o600)
	if _, _, err := ReadSpec(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized: %v", err)
	}
}
