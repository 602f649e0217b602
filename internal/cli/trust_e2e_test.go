package cli_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/internal/agent"
	"coffer/test/testkit"
)

// TestCLIAgentLabelsAndScopes: --agent-labels on a join token reaches the
// enrolled agent, agent ls shows labels and scope, bad labels are usage
// errors, and a scoped admin's join token inherits its scope.
func TestCLIAgentLabelsAndScopes(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	dir := t.TempDir()
	s := testkit.StartServer(t, filepath.Join(dir, "data"))

	for _, tc := range []struct {
		args  []string
		inErr string
	}{
		{[]string{"--role", "agent", "--agent-labels", "bad key!=x"}, `"bad key!"`},
		{[]string{"--role", "agent", "--agent-labels", "env"}, `"env" is not key=value`},
		{[]string{"--role", "agent", "--agent-labels", "env=a,env=b"}, `"env" given twice`},
		{[]string{"--role", "viewer", "--agent-labels", "env=prod"}, "only for --role agent"},
	} {
		_, errOut, code := s.CLI(t, "", append([]string{"token", "create"}, tc.args...)...)
		if code != 2 || !strings.Contains(errOut, "--agent-labels") || !strings.Contains(errOut, tc.inErr) {
			t.Errorf("token create %v: exit %d: %s", tc.args, code, errOut)
		}
	}

	scoped := *s
	scoped.Token = strings.TrimSpace(s.MustCLI(t, "", "token", "create", "--role", "admin", "--scope", "payments/*"))
	var tok struct {
		Token       string            `json:"token"`
		Scope       string            `json:"scope"`
		AgentLabels map[string]string `json:"agent_labels"`
	}
	out := scoped.MustCLI(t, "", "token", "create", "--role", "agent", "--agent-labels", "env=prod, zone=eu-1", "-o", "json")
	if err := json.Unmarshal([]byte(out), &tok); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if tok.Scope != "payments/" || tok.AgentLabels["env"] != "prod" || tok.AgentLabels["zone"] != "eu-1" || len(tok.AgentLabels) != 2 {
		t.Fatalf("join token record: %+v", tok)
	}
	if ls := s.MustCLI(t, "", "token", "ls"); !strings.Contains(ls, "env=prod,zone=eu-1") {
		t.Fatalf("token ls lacks the agent labels:\n%s", ls)
	}
	// The scoped admin does not see (or revoke) the bootstrap admin token.
	if ls := scoped.MustCLI(t, "", "token", "ls"); strings.Contains(ls, "bootstrap admin") {
		t.Fatalf("scoped admin sees the bootstrap token:\n%s", ls)
	}

	caPEM, _ := os.ReadFile(s.CA)
	if _, err := agent.LoadOrEnroll(context.Background(), s.Addr, caPEM, filepath.Join(dir, "agent"), "node-1", tok.Token); err != nil {
		t.Fatal(err)
	}
	table := s.MustCLI(t, "", "agent", "ls")
	if !strings.Contains(table, "LABELS") || !strings.Contains(table, "env=prod,zone=eu-1") || !strings.Contains(table, "payments/") {
		t.Fatalf("agent ls:\n%s", table)
	}
	var as []struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
		Scope  string            `json:"scope"`
	}
	if err := json.Unmarshal([]byte(scoped.MustCLI(t, "", "agent", "ls", "-o", "json")), &as); err != nil {
		t.Fatal(err)
	}
	if len(as) != 1 || as[0].Name != "node-1" || as[0].Labels["zone"] != "eu-1" || as[0].Scope != "payments/" {
		t.Fatalf("agent ls -o json: %+v", as)
	}
}
