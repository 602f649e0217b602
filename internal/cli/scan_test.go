package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/internal/scan/scangen"
)

// labelledImage generates the small labelled test image.
func labelledImage(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "small.tar")
	if _, err := scangen.WriteFile(p, scangen.Options{Seed: 1, Filler: 256 << 10}); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRoot(&out, &errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	if err != nil && err.Error() != "" {
		errOut.WriteString(err.Error())
	}
	return out.String(), errOut.String(), ExitCode(err)
}

func TestScanCommand(t *testing.T) {
	t.Setenv("COFFER_TOKEN", "") // the --import cases below must not find one
	img := labelledImage(t)
	clean := t.TempDir()
	if err := os.WriteFile(filepath.Join(clean, "main.go"), []byte("package main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dirty := t.TempDir()
	if err := os.WriteFile(filepath.Join(dirty, ".env"), []byte("DB_PASSWORD=Zr8f3kQ9pLx2Vb7m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rules, []byte("rules:\n  - id: corp\n    severity: low\n    keywords: [corpx_]\n    regex: 'corpx_[a-z]{8}'\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"image findings", []string{"scan", "image", img}, ExitFailure, "deleted in layer 3"},
		{"fail-on none", []string{"scan", "image", "--fail-on", "none", img}, ExitOK, "finding(s)"},
		{"fail-on critical", []string{"scan", "image", "--fail-on", "critical", img}, ExitFailure, "critical"},
		{"json", []string{"scan", "image", "-o", "json", img}, ExitFailure, `"fingerprint"`},
		{"json snake_case", []string{"scan", "image", "-o", "json", img}, ExitFailure, `"deleted_in"`},
		{"sarif", []string{"scan", "image", "--output", "sarif", img}, ExitFailure, `"2.1.0"`},
		{"deprecated --format", []string{"scan", "image", "--format", "json", img}, ExitFailure, `"low_confidence"`},
		{"format and -o disagree", []string{"scan", "image", "--format", "json", "-o", "sarif", img}, ExitUsage, "disagree"},
		{"-o is not a file", []string{"scan", "dir", "-o", "report.json", clean}, ExitUsage, "--output-file"},
		{"clean dir", []string{"scan", "dir", clean}, ExitOK, "0 finding(s)"},
		{"dirty dir", []string{"scan", "dir", dirty}, ExitFailure, "generic-password"},
		{"extra rules", []string{"scan", "dir", "--rules", rules, clean}, ExitOK, "0 finding(s)"},
		{"missing image", []string{"scan", "image", filepath.Join(clean, "nope.tar")}, ExitUsage, ""},
		{"not an image", []string{"scan", "image", filepath.Join(clean, "main.go")}, ExitUsage, "not an image"},
		{"bad format", []string{"scan", "image", "-o", "xml", img}, ExitUsage, "want table, json or sarif"},
		{"include-low", []string{"scan", "dir", "--include-low", clean}, ExitOK, "0 finding(s)"},
		{"image examples", []string{"scan", "image", "--help"}, ExitOK, "Examples:\n  coffer scan image app.tar"},
		{"dir examples", []string{"scan", "dir", "--help"}, ExitOK, "Examples:\n  coffer scan dir ."},
		{"import without token", []string{"scan", "image", "--import", "x/y", "--token", "", img}, ExitUsage, "token"},
		{"import bad prefix", []string{"scan", "image", "--import", "Bad Prefix", img}, ExitUsage, "--import"},
		{"bad fail-on", []string{"scan", "image", "--fail-on", "dire", img}, ExitUsage, "--fail-on"},
		{"no target", []string{"scan", "image"}, ExitUsage, "argument"},
		{"bad flag", []string{"scan", "image", "--nope", img}, ExitUsage, ""},
		{"missing rules file", []string{"scan", "dir", "--rules", "/nonexistent.yaml", clean}, ExitUsage, "--rules"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %.500s\nstderr: %.500s", code, tc.code, out, errOut)
			}
			if tc.contains != "" && !strings.Contains(out+errOut, tc.contains) {
				t.Errorf("output lacks %q\nstdout: %.800s\nstderr: %.500s", tc.contains, out, errOut)
			}
		})
	}
}

func TestScanCommandIgnoreAndOutput(t *testing.T) {
	dirty := t.TempDir()
	if err := os.WriteFile(filepath.Join(dirty, ".env"), []byte("DB_PASSWORD=Zr8f3kQ9pLx2Vb7m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(t.TempDir(), "report.json")
	_, _, code := runCLI(t, "scan", "dir", "-o", "json", "--output-file", report, dirty)
	if code != ExitFailure {
		t.Fatalf("exit %d", code)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Findings []struct{ Fingerprint string } `json:"findings"`
	}
	if err := json.Unmarshal(b, &rep); err != nil || len(rep.Findings) != 1 {
		t.Fatalf("report %s: %v", b, err)
	}
	// .cofferignore in the scanned directory suppresses the finding.
	if err := os.WriteFile(filepath.Join(dirty, ".cofferignore"), []byte(rep.Findings[0].Fingerprint+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, code := runCLI(t, "scan", "dir", dirty)
	if code != ExitOK || !strings.Contains(out, "1 suppressed") {
		t.Fatalf("exit %d, output %s", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad-ignore")
	if err := os.WriteFile(bad, []byte("zzz\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, code := runCLI(t, "scan", "dir", "--ignore", bad, dirty); code != ExitUsage {
		t.Errorf("bad ignore file: exit %d", code)
	}
}

// TestScanOutputFlag: -o picks the format, as in every other command; it
// never names a file (it used to write a table into a file named "json").
func TestScanOutputFlag(t *testing.T) {
	dirty := t.TempDir()
	if err := os.WriteFile(filepath.Join(dirty, ".env"), []byte("DB_PASSWORD=Zr8f3kQ9pLx2Vb7m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wd := t.TempDir()
	t.Chdir(wd)
	out, errOut, code := runCLI(t, "scan", "dir", dirty, "-o", "json")
	if code != ExitFailure {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep struct {
		Findings []map[string]any `json:"findings"`
		Low      []map[string]any `json:"low_confidence"`
		Stats    map[string]any   `json:"stats"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Findings) != 1 {
		t.Fatalf("stdout is not the JSON report: %v\n%s", err, out)
	}
	for _, k := range []string{"rule", "confidence", "deleted_in", "overwritten_in", "file"} {
		if _, ok := rep.Findings[0][k]; !ok {
			t.Errorf("finding lacks %q: %v", k, rep.Findings[0])
		}
	}
	for _, k := range []string{"scanned_bytes", "binary_files", "duration_ns"} {
		if _, ok := rep.Stats[k]; !ok {
			t.Errorf("stats lack %q: %v", k, rep.Stats)
		}
	}
	if entries, _ := os.ReadDir(wd); len(entries) != 0 {
		t.Errorf("-o json wrote a file in the working directory: %v", entries)
	}
}
