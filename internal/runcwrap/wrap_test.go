package runcwrap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"coffer/internal/container"
	"coffer/internal/hook"
)

const testID = "3a46abbfcff07ad803561ebc082c98bb4d62080e92b3b8f756987de644a25759"

type execCall struct {
	path       string
	argv, env  []string
	specAtExec []byte
}

// harness is a bundle, a fake real runc and the wrapper's seams.
type harness struct {
	cfg    Config
	bundle string
	log    string
	execs  []execCall
	stderr bytes.Buffer
}

func newHarness(t *testing.T, spec string, labels map[string]string, lookupErr error, imageLabels ...map[string]string) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{bundle: filepath.Join(dir, "bundle")}
	h.log = filepath.Join(h.bundle, "log.json")
	if err := os.MkdirAll(h.bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	if spec != "" {
		if err := os.WriteFile(filepath.Join(h.bundle, "config.json"), []byte(spec), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	runc, self := filepath.Join(dir, "runc"), filepath.Join(dir, "coffer-agent")
	for _, p := range []string{runc, self} {
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h.cfg = Config{
		Runc: runc, Socket: "/run/coffer/hook.sock", HookTimeout: 5 * time.Second, Self: self,
		Lookup: func(ctx context.Context, id string) (container.Info, error) {
			if id != testID {
				t.Errorf("lookup of %q", id)
			}
			if _, ok := ctx.Deadline(); !ok {
				t.Error("lookup without a deadline")
			}
			info := container.Info{ID: id, Labels: labels}
			if len(imageLabels) > 0 {
				info.ImageLabels = imageLabels[0]
			}
			return info, lookupErr
		},
		Stderr: &h.stderr, Env: []string{"PATH=/usr/bin"}, Cwd: "/",
		Exec: func(path string, argv, env []string) error {
			b, _ := os.ReadFile(filepath.Join(h.bundle, "config.json"))
			h.execs = append(h.execs, execCall{path, argv, env, b})
			return errors.New("exec stubbed")
		},
	}
	return h
}

func (h *harness) create() []string {
	return []string{"--root", "/run/runc", "--log", h.log, "--log-format", "json", "create", "--bundle", h.bundle, "--pid-file", h.bundle + "/init.pid", testID}
}

// run runs the wrapper; "exec stubbed" means it reached the exec.
func (h *harness) run(t *testing.T, args []string) (execed bool) {
	t.Helper()
	code := Run(h.cfg, args)
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	if len(h.execs) == 0 {
		return false
	}
	e := h.execs[0]
	if e.path != h.cfg.Runc || !slices.Equal(e.argv, append([]string{h.cfg.Runc}, args...)) {
		t.Fatalf("exec %s %q, want the real runc with the arguments untouched", e.path, e.argv)
	}
	if !slices.Contains(e.env, loopEnv+"=1") || !slices.Contains(e.env, "PATH=/usr/bin") {
		t.Errorf("env %q", e.env)
	}
	return true
}

type specView struct {
	Process     map[string]any    `json:"process"`
	Hooks       map[string][]Hook `json:"hooks"`
	Annotations map[string]string `json:"annotations"`
}

func view(t *testing.T, b []byte) specView {
	t.Helper()
	var s specView
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("spec: %v: %s", err, b)
	}
	return s
}

const dockerSpec = `{"ociVersion":"1.0.2-dev","process":{"args":["sh","-c","cat /run/secrets/x"],"env":["A=B"]},"root":{"path":"/var/lib/docker/overlay2/x/merged"},"hooks":{"prestart":[{"path":"/usr/bin/dockerd","args":["libnetwork-setkey"]}]}}`

func TestRunCreate(t *testing.T) {
	for name, tc := range map[string]struct {
		labels, image map[string]string
		err           error
		required      bool
	}{
		"image's label":                          {image: map[string]string{hook.RequireLabel: "true"}, required: true},
		"operator's false over the image's true": {labels: map[string]string{hook.RequireLabel: "false"}, image: map[string]string{hook.RequireLabel: "true"}},
		"plain":                                  {labels: map[string]string{"app": "web"}},
		"required":                               {labels: map[string]string{hook.RequireLabel: "true"}, required: true},
		"required=false":                         {labels: map[string]string{hook.RequireLabel: "false"}},
		"not the engine's":                       {err: ErrNotEngines},
		"not being started":                      {err: errors.Join(ErrNotEngines, errors.New("running"))},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, dockerSpec, tc.labels, tc.err, tc.image)
			if !h.run(t, h.create()) {
				t.Fatalf("no exec: %s", h.stderr.String())
			}
			s := view(t, h.execs[0].specAtExec)
			hooks := s.Hooks["createRuntime"]
			if len(hooks) != 1 || hooks[0].Path != h.cfg.Self || !slices.Equal(hooks[0].Args, []string{h.cfg.Self, "hook", "--socket", "/run/coffer/hook.sock", "--timeout", "5s"}) || hooks[0].Timeout == nil || *hooks[0].Timeout != 10 {
				t.Fatalf("createRuntime hooks %+v", hooks)
			}
			if len(s.Hooks["prestart"]) != 1 || s.Process["env"] == nil {
				t.Errorf("the rest of the spec was lost: %+v", s)
			}
			if got := s.Annotations[hook.RequireAnnotation] == "true"; got != tc.required {
				t.Errorf("annotation %v, want required=%v", s.Annotations, tc.required)
			}
		})
	}
}

func TestRunPassesThrough(t *testing.T) {
	for _, args := range [][]string{
		{"--root", "/run/runc", "start", testID},
		{"--root", "/run/runc", "exec", "--process", "/tmp/p.json", "--detach", testID},
		{"--root", "/run/runc", "kill", testID, "9"},
		{"--root", "/run/runc", "delete", "--force", testID},
		{"--root", "/run/runc", "state", testID},
		{"--version"},
		{"features"},
	} {
		h := newHarness(t, dockerSpec, nil, errors.New("lookup must not be called"))
		h.cfg.Lookup = func(context.Context, string) (container.Info, error) {
			t.Errorf("%q: lookup called", args)
			return container.Info{}, nil
		}
		if !h.run(t, args) {
			t.Fatalf("%q: no exec: %s", args, h.stderr.String())
		}
		if b, _ := os.ReadFile(filepath.Join(h.bundle, "config.json")); string(b) != dockerSpec {
			t.Errorf("%q changed the spec", args)
		}
	}
}

func TestRunRefuses(t *testing.T) {
	lastError := func(t *testing.T, log string) string {
		t.Helper()
		b, err := os.ReadFile(log)
		if err != nil {
			t.Fatalf("runc's log: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		var e struct{ Level, Msg, Time string }
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &e); err != nil || e.Level != "error" || e.Time == "" {
			t.Fatalf("log line %q: %v", lines[len(lines)-1], err)
		}
		return e.Msg
	}
	for name, tc := range map[string]struct {
		spec   string
		labels map[string]string
		err    error
		setup  func(h *harness)
		args   func(h *harness) []string
		want   string
	}{
		"engine unreachable": {spec: dockerSpec, err: errors.New("dial unix /var/run/docker.sock: connection refused"),
			want: "cannot read its labels from the engine"},
		"required, spec unreadable": {spec: `[`, labels: map[string]string{hook.RequireLabel: "true"},
			want: "labelled coffer.require-secrets=true and its spec could not get the coffer hook"},
		"annotated, spec not extendable": {spec: `{"annotations":{"coffer/require-secrets":"true"},"hooks":[]}`,
			want: "its spec could not get the coffer hook"},
		"runs itself":   {spec: dockerSpec, setup: func(h *harness) { h.cfg.Env = append(h.cfg.Env, loopEnv+"=1") }, want: "runs the wrapper again"},
		"runc is self":  {spec: dockerSpec, setup: func(h *harness) { h.cfg.Runc = h.cfg.Self }, want: "is coffer-agent itself"},
		"relative runc": {spec: dockerSpec, setup: func(h *harness) { h.cfg.Runc = "runc" }, want: "want a clean absolute path"},
		"missing runc":  {spec: dockerSpec, setup: func(h *harness) { h.cfg.Runc = "/nonexistent/runc" }, want: "--runc"},
		"bad timeout":   {spec: dockerSpec, setup: func(h *harness) { h.cfg.HookTimeout = 0 }, want: "--hook-timeout"},
		"unknown option": {spec: dockerSpec, args: func(h *harness) []string {
			return []string{"--log", h.log, "--log-format", "json", "--evil", "create", testID}
		}, want: `unknown runc option "--evil"`},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, tc.spec, tc.labels, tc.err)
			if tc.setup != nil {
				tc.setup(h)
			}
			args := h.create()
			if tc.args != nil {
				args = tc.args(h)
			}
			if h.run(t, args) {
				t.Fatal("the real runc ran")
			}
			if msg := lastError(t, h.log); !strings.Contains(msg, tc.want) || !strings.HasPrefix(msg, "coffer-runc: ") {
				t.Errorf("logged %q, want %q", msg, tc.want)
			}
			if !strings.Contains(h.stderr.String(), tc.want) {
				t.Errorf("stderr %q", h.stderr.String())
			}
			if b, _ := os.ReadFile(filepath.Join(h.bundle, "config.json")); string(b) != tc.spec {
				t.Errorf("the spec changed: %s", b)
			}
		})
	}
}

// A spec the wrapper cannot extend does not stop a container that does
// not require its secrets: it starts without the hook (fail-open), and
// runc's log says why.
func TestRunFailOpenOnBadSpec(t *testing.T) {
	h := newHarness(t, `{"hooks":[]}`, map[string]string{"app": "web"}, nil)
	if !h.run(t, h.create()) {
		t.Fatalf("refused: %s", h.stderr.String())
	}
	b, _ := os.ReadFile(h.log)
	if !strings.Contains(string(b), `"level":"warning"`) || !strings.Contains(string(b), "starts without early delivery") {
		t.Errorf("log %q", b)
	}
	if string(h.execs[0].specAtExec) != `{"hooks":[]}` {
		t.Errorf("spec changed: %s", h.execs[0].specAtExec)
	}
}
