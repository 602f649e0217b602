package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"coffer/internal/container/containerd"
	"coffer/internal/container/docker"
	"coffer/internal/container/fake"
	"coffer/internal/hook"
)

// TestMain runs the agent's main when the test binary is started as
// coffer-agent by a test below.
func TestMain(m *testing.M) {
	if os.Getenv("COFFER_AGENT_TEST_MAIN") == "1" {
		os.Exit(run())
	}
	os.Exit(m.Run())
}

// runAgent runs the test binary as coffer-agent with args.
func runAgent(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "COFFER_AGENT_TEST_MAIN=1")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// On Docker the hook socket is allowed, and on only when given.
func TestDockerHookSocket(t *testing.T) {
	f := pflag.NewFlagSet("t", pflag.ContinueOnError)
	for _, n := range []string{"docker-host", "containerd-socket", "nri-socket", "node-name", "hook-socket"} {
		f.String(n, "", "")
	}
	_ = f.Set("hook-socket", "/run/coffer/hook.sock")
	if err := checkRuntimeFlags(f, "docker"); err != nil {
		t.Errorf("--runtime docker --hook-socket: %v", err)
	}
	drt, err := docker.New(docker.Config{Host: "unix:///nonexistent.sock"})
	if err != nil {
		t.Fatal(err)
	}
	defer drt.Close()
	if rt := hookRuntime(drt, nil, false); rt != nil {
		t.Errorf("Docker without --hook-socket: %T, want off", rt)
	}
	if rt, ok := hookRuntime(drt, nil, true).(hook.Docker); !ok || rt.Engine != drt {
		t.Errorf("Docker with --hook-socket: %T", rt)
	}
	ctrd := &containerd.Runtime{}
	if rt := hookRuntime(ctrd, ctrd, false); rt != hook.Runtime(ctrd) {
		t.Errorf("containerd: %T", rt)
	}
	if rt := hookRuntime(fake.New(), nil, true); rt != nil {
		t.Errorf("another runtime: %T", rt)
	}
}

// The wrapper's own command line: its flags end with "--"; anything else
// is a usage error (exit 2) before runc runs.
func TestRuncUsage(t *testing.T) {
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		args []string
		code int
		want string
	}{
		"no separator":        {[]string{"runc", "--root", "/r", "create", "x"}, 2, `want "coffer-agent runc [flags] -- RUNC-ARGS..."`},
		"unknown flag":        {[]string{"runc", "--evil", "--", "state", "x"}, 2, "unknown flag: --evil"},
		"stray argument":      {[]string{"runc", "stray", "--", "state", "x"}, 2, `unexpected argument "stray"`},
		"relative runc":       {[]string{"runc", "--runc", "runc", "--", "state", "x"}, 1, "--runc \"runc\": want a clean absolute path"},
		"help":                {[]string{"runc", "--help"}, 0, "--hook-socket string"},
		"bad hook timeout":    {[]string{"runc", "--runc", "/bin/true", "--hook-timeout", "0s", "--", "state", "x"}, 1, "--hook-timeout"},
		"runc is the wrapper": {[]string{"runc", "--runc", bin, "--", "state", "x"}, 1, "is coffer-agent itself"},
	} {
		t.Run(name, func(t *testing.T) {
			out, code := runAgent(t, tc.args...)
			if code != tc.code || !strings.Contains(string(out), tc.want) {
				t.Errorf("exit %d %q, want %d and %q", code, out, tc.code, tc.want)
			}
		})
	}
	// Passed through: the real runc gets the arguments untouched, and
	// its output and exit code are the wrapper's.
	runc := filepath.Join(t.TempDir(), "runc")
	if err := os.WriteFile(runc, []byte("#!/bin/sh\necho \"$0 $*\"\nexit 7\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, code := runAgent(t, "runc", "--runc", runc, "--", "--root", "/r", "kill", "abc", "9")
	if code != 7 || out != runc+" --root /r kill abc 9\n" {
		t.Errorf("pass-through: exit %d %q", code, out)
	}
}
