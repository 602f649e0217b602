package scan

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestScanDir(t *testing.T) {
	dir := t.TempDir()
	g := newRnd()
	pw := "Zr" + g.s(an, 14)
	write := func(rel, content string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(".env", "DB_PASSWORD="+pw+"\n")
	write(".git/config", "[remote \"origin\"]\n\turl = https://x:"+pw+"@git.corp/r.git\n")
	write("node_modules/lib/index.js", "module.exports = {};\n")
	write("README.md", "password: <password>\n")
	write("big.bin", strings.Repeat("x", 2048))
	// symlink loop and a link out of the tree: neither is followed
	if err := os.Symlink("loop", filepath.Join(dir, "loop")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(dir, "etc-link")); err != nil {
		t.Fatal(err)
	}
	s := newScanner(t, Config{MaxFileSize: 1024})
	rep, err := s.ScanDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range rep.Findings {
		got[f.Path] = f.RuleID
		if f.Source != "file" || f.Layer != nil {
			t.Errorf("%s: source %q layer %v", f.Path, f.Source, f.Layer)
		}
	}
	want := map[string]string{".env": "generic-password", ".git/config": "url-credentials"}
	if len(got) != len(want) || got[".env"] != want[".env"] || got[".git/config"] != want[".git/config"] {
		t.Errorf("findings %v, want %v", got, want)
	}
	if len(rep.Skipped) != 1 || rep.Skipped[0].Path != "big.bin" || rep.Skipped[0].Reason != SkipTooLarge {
		t.Errorf("skipped %+v", rep.Skipped)
	}
	if _, err := s.ScanDir(context.Background(), filepath.Join(dir, ".env")); err == nil {
		t.Error("ScanDir of a file succeeded")
	}
	if _, err := s.ScanDir(context.Background(), filepath.Join(dir, "absent")); err == nil {
		t.Error("ScanDir of a missing path succeeded")
	}
}

func TestIgnore(t *testing.T) {
	path, _ := tinyImage(t)
	rep, err := scanTarget(t, path, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first := rep.Findings[0]
	src := "# reviewed\n" + first.Fingerprint + "  # test value\nrule:jwt\npath:root/.kube\n"
	ig, err := ParseIgnore(strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	img, closeFn, err := OpenImage(ctx, path, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	rep2, err := newScanner(t, Config{Ignore: ig}).ScanImage(ctx, img, path)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep2.Findings {
		if f.Fingerprint == first.Fingerprint || f.RuleID == "jwt" || strings.HasPrefix(f.Path, "root/.kube/") {
			t.Errorf("not suppressed: %s %s", f.RuleID, f.Path)
		}
	}
	if n := len(rep.Findings) - len(rep2.Findings); n != rep2.Stats.Suppressed || n < 4 {
		t.Errorf("suppressed %d, stats say %d", n, rep2.Stats.Suppressed)
	}
	for _, bad := range []string{"not-a-fingerprint\n", "path:[\n"} {
		if _, err := ParseIgnore(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseIgnore(%q) accepted", bad)
		}
	}
	if ig, err := LoadIgnore(filepath.Join(t.TempDir(), "absent")); ig != nil || err != nil {
		t.Errorf("missing ignore file: %v %v", ig, err)
	}
}

func TestOutputFormats(t *testing.T) {
	path, _ := tinyImage(t)
	rep, err := scanTarget(t, path, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rules, _ := LoadRules()

	var table bytes.Buffer
	if err := WriteTable(&table, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SEVERITY", "added in layer 2, deleted in layer 3", "overwritten in layer 3", "config:history", "finding(s)"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}

	var js bytes.Buffer
	if err := WriteJSON(&js, rep); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Findings []struct {
			Rule, Path, Excerpt, Fingerprint, Status string
			Severity                                 Severity
			Layer                                    *LayerRef
		}
		Stats Stats
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Findings) != len(rep.Findings) || back.Stats.Files != rep.Stats.Files {
		t.Errorf("json round trip: %d findings, stats %+v", len(back.Findings), back.Stats)
	}
	if back.Findings[0].Severity == 0 || back.Findings[0].Rule == "" {
		t.Errorf("json finding %+v", back.Findings[0])
	}

	var sarif bytes.Buffer
	if err := WriteSARIF(&sarif, rep, rules, SARIFOptions{}); err != nil {
		t.Fatal(err)
	}
	var log struct {
		Version string `json:"version"`
		Runs    []struct {
			Tool struct {
				Driver struct {
					Name  string `json:"name"`
					Rules []struct {
						ID string `json:"id"`
					} `json:"rules"`
				} `json:"driver"`
			} `json:"tool"`
			Results []struct {
				RuleID              string            `json:"ruleId"`
				RuleIndex           int               `json:"ruleIndex"`
				PartialFingerprints map[string]string `json:"partialFingerprints"`
				Properties          map[string]any    `json:"properties"`
				Locations           []struct {
					PhysicalLocation struct {
						ArtifactLocation struct {
							URI string `json:"uri"`
						} `json:"artifactLocation"`
					} `json:"physicalLocation"`
				} `json:"locations"`
			} `json:"results"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(sarif.Bytes(), &log); err != nil {
		t.Fatal(err)
	}
	if log.Version != "2.1.0" || len(log.Runs) != 1 || len(log.Runs[0].Results) != len(rep.Findings) {
		t.Fatalf("sarif: version %q, %d runs", log.Version, len(log.Runs))
	}
	run := log.Runs[0]
	layered := 0
	for _, r := range run.Results {
		if run.Tool.Driver.Rules[r.RuleIndex].ID != r.RuleID {
			t.Errorf("result %s points at rule %d", r.RuleID, r.RuleIndex)
		}
		if r.PartialFingerprints["cofferFingerprint/v1"] == "" || len(r.Locations) != 1 || r.Locations[0].PhysicalLocation.ArtifactLocation.URI == "" {
			t.Errorf("result %+v", r)
		}
		if _, ok := r.Properties["layerIndex"]; ok {
			layered++
			if d, _ := r.Properties["layerDigest"].(string); !strings.HasPrefix(d, "sha256:") {
				t.Errorf("layerDigest %v", r.Properties["layerDigest"])
			}
		}
	}
	if layered == 0 {
		t.Error("no SARIF result carries a layer")
	}
	// The planted secrets carry C0FFEE after at most a 4-byte prefix; the
	// redaction shows no more than 4 bytes, so no output may contain it.
	for i, out := range []string{table.String(), js.String(), sarif.String()} {
		if strings.Contains(strings.ToUpper(out), "C0FFEE") {
			t.Errorf("output %d reveals secret material", i)
		}
	}
}

// TestSARIFMapping: an archive member's result points at the archive file
// (a path that exists in the layer) with the member in properties and no
// region; an image-config result names the config field and entry; the run
// documents both conventions; low-confidence results only when asked.
func TestSARIFMapping(t *testing.T) {
	path, _ := tinyImage(t)
	rep, err := scanTarget(t, path, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rules, _ := LoadRules()
	type result struct {
		RuleID    string         `json:"ruleId"`
		Level     string         `json:"level"`
		Props     map[string]any `json:"properties"`
		Locations []struct {
			PhysicalLocation struct {
				ArtifactLocation struct{ URI string }     `json:"artifactLocation"`
				Region           *struct{ StartLine int } `json:"region"`
			} `json:"physicalLocation"`
		} `json:"locations"`
		Logical []struct{ FullyQualifiedName string } `json:"logicalLocations"`
	}
	decode := func(o SARIFOptions) ([]result, map[string]any) {
		var b bytes.Buffer
		if err := WriteSARIF(&b, rep, rules, o); err != nil {
			t.Fatal(err)
		}
		var log struct {
			Runs []struct {
				Results    []result       `json:"results"`
				Properties map[string]any `json:"properties"`
			} `json:"runs"`
		}
		if err := json.Unmarshal(b.Bytes(), &log); err != nil {
			t.Fatal(err)
		}
		return log.Runs[0].Results, log.Runs[0].Properties
	}
	rs, props := decode(SARIFOptions{})
	if _, ok := props["coffer"].(map[string]any)["archiveMembers"]; !ok {
		t.Error("run properties do not document archive members")
	}
	var member, config bool
	for _, r := range rs {
		loc := r.Locations[0].PhysicalLocation
		if strings.Contains(loc.ArtifactLocation.URI, "!") {
			t.Errorf("uri %q holds an archive member", loc.ArtifactLocation.URI)
		}
		if m, _ := r.Props["member"].(string); m != "" {
			member = true
			if loc.Region != nil || r.Props["path"] != loc.ArtifactLocation.URI+"!/"+m || len(r.Logical) != 1 {
				t.Errorf("member result %+v", r)
			}
		}
		if f, _ := r.Props["configField"].(string); f != "" {
			config = true
			if _, ok := r.Props["configIndex"].(float64); !ok || !strings.HasPrefix(loc.ArtifactLocation.URI, "config:") || loc.Region == nil {
				t.Errorf("config result %+v", r)
			}
			if f == "Env" && r.Props["configKey"] == nil {
				t.Errorf("env result without a key: %+v", r.Props)
			}
		}
		if r.Props["confidence"] == "low" {
			t.Errorf("low-confidence result without IncludeLow")
		}
	}
	if !member || !config {
		t.Errorf("no member (%v) or config (%v) result", member, config)
	}
	if len(rep.Low) == 0 {
		t.Fatal("the test image has no low-confidence finding")
	}
	all, _ := decode(SARIFOptions{IncludeLow: true})
	if len(all) != len(rep.Findings)+len(rep.Low) {
		t.Errorf("IncludeLow: %d results, want %d", len(all), len(rep.Findings)+len(rep.Low))
	}
}
