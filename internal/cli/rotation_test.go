package cli_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"coffer/test/testkit"
)

// bind create --rotation: canonical on the server, shown by ls, show and
// update's diff, kept by export; a kill signal is a usage error that
// changes nothing.
func TestCLIBindRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	s := testkit.StartServer(t, filepath.Join(t.TempDir(), "data"))
	s.MustCLI(t, "v", "secret", "put", "web/tls-key")
	out := s.MustCLI(t, "", "bind", "create", "web-tls", "--secret", "web/tls-key", "--selector", "app=nginx", "--rotation", "signal:hup")
	if !strings.Contains(out, "rotation signal:SIGHUP") {
		t.Fatalf("bind create: %s", out)
	}
	s.MustCLI(t, "", "bind", "create", "web-plain", "--secret", "web/tls-key", "--selector", "app=other", "--file", "k")
	ls := s.MustCLI(t, "", "bind", "ls")
	lines := strings.Split(strings.TrimSpace(ls), "\n")
	if len(lines) != 3 || !strings.HasSuffix(strings.TrimSpace(lines[0]), "ROTATION") || !strings.HasSuffix(strings.TrimSpace(lines[1]), "file") ||
		!strings.HasSuffix(strings.TrimSpace(lines[2]), "signal:SIGHUP") {
		t.Fatalf("bind ls:\n%s", ls)
	}
	if show := s.MustCLI(t, "", "bind", "show", "web-tls"); !strings.Contains(show, "Rotation:    signal:SIGHUP (the file is swapped, then the container's main process gets SIGHUP)") {
		t.Fatalf("bind show:\n%s", show)
	}
	var b map[string]any
	if err := json.Unmarshal([]byte(s.MustCLI(t, "", "bind", "show", "web-plain", "-o", "json")), &b); err != nil || b["rotation"] != nil {
		t.Fatalf("the default is absent from the API's answer: %v %v", b, err)
	}
	if out := s.MustCLI(t, "", "bind", "update", "web-tls", "--rotation", "restart-process"); !strings.Contains(out, "rotation: signal:SIGHUP → restart-process") {
		t.Fatalf("bind update: %s", out)
	}
	if exp := s.MustCLI(t, "", "export"); !strings.Contains(exp, "rotation: restart-process") {
		t.Fatalf("export lacks the contract:\n%s", exp)
	}
	_, errOut, code := s.CLI(t, "", "bind", "update", "web-tls", "--rotation", "signal:SIGKILL")
	if code != 2 || !strings.Contains(errOut, "SIGKILL kills the process") {
		t.Fatalf("signal:SIGKILL: exit %d: %s", code, errOut)
	}
	if show := s.MustCLI(t, "", "bind", "show", "web-tls"); !strings.Contains(show, "Rotation:    restart-process") {
		t.Fatalf("a refused update changed the binding:\n%s", show)
	}
}
