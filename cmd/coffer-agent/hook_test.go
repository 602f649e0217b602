package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestHookUsage: a misconfigured hook (an unknown flag, an argument)
// exits 2 with a message, like bad input on stdin, never 0.
func TestHookUsage(t *testing.T) {
	if os.Getenv("COFFER_AGENT_MAIN") == "1" {
		os.Args = append([]string{"coffer-agent"}, strings.Fields(os.Getenv("COFFER_AGENT_ARGS"))...)
		os.Exit(run())
	}
	for _, args := range []string{"hook --bogus", "hook extra", "hook --timeout nope"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHookUsage$")
		cmd.Env = append(os.Environ(), "COFFER_AGENT_MAIN=1", "COFFER_AGENT_ARGS="+args)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "coffer-agent:") {
			t.Errorf("coffer-agent %s: %v %q, want exit 2 and a message", args, err, out)
		}
	}
}
