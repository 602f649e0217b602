package cli_test

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"coffer/test/testkit"
)

// runServer runs coffer-server expecting it to fail at start; it returns its output.
func runServer(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(testkit.Bin(t, "coffer-server"), append([]string{"--data-dir", dir, "--listen", testkit.FreeAddr(t)}, args...)...)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("coffer-server started with a bad data dir:\n%s", out)
	}
	return string(out)
}

// snapshot hashes every file under dir.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			lines = append(lines, fmt.Sprintf("%s %x", p, sha256.Sum256(b)))
		}
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// assertAbsent fails if value appears in logs or any file under dirs.
func assertAbsent(t *testing.T, value, logs string, dirs ...string) {
	t.Helper()
	if strings.Contains(logs, value) {
		t.Error("value found in logs")
	}
	for _, d := range dirs {
		filepath.Walk(d, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				if b, _ := os.ReadFile(p); strings.Contains(string(b), value) {
					t.Errorf("value found in %s", p)
				}
			}
			return nil
		})
	}
}
