package scan

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestGitleaksSamples measures the rules on an independent labelled set:
// the true- and false-positive samples that gitleaks' rule definitions
// carry (one list per gitleaks rule; see docs/benchmarks-scan.md for how
// to extract them). It only reports, with -v: the formats are gitleaks'
// choice, not ours.
//
//	COFFER_GITLEAKS_SAMPLES=/tmp/glsamples/samples.json go test -run TestGitleaksSamples -v ./internal/scan/
func TestGitleaksSamples(t *testing.T) {
	p := os.Getenv("COFFER_GITLEAKS_SAMPLES")
	if p == "" {
		t.Skip("set COFFER_GITLEAKS_SAMPLES to the samples JSON")
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var samples []struct {
		Rule string            `json:"rule"`
		TPs  []string          `json:"tps"`
		FPs  []string          `json:"fps"`
		PTPs map[string]string `json:"path_tps"`
		PFPs map[string]string `json:"path_fps"`
	}
	if err := json.Unmarshal(b, &samples); err != nil {
		t.Fatal(err)
	}
	rs, _ := LoadRules()
	d := rs.newDetector()
	found := func(path, text string) (bool, []string) {
		var ids []string
		for _, m := range d.find(path, []byte(text), isBinary([]byte(text))) {
			ids = append(ids, m.rule.ID)
		}
		return len(ids) > 0, ids
	}
	var tp, tpn, fp, fpn int
	var rows []string
	for _, s := range samples {
		hit, n := 0, 0
		var missed []string
		check := func(path, text string) {
			n++
			if ok, _ := found(path, text); ok {
				hit++
			} else if len(missed) < 2 {
				missed = append(missed, text)
			}
		}
		for _, x := range s.TPs {
			check("sample.txt", x)
		}
		for path, x := range s.PTPs {
			check(path, x)
		}
		fhit, fn := 0, 0
		var fps []string
		for _, x := range s.FPs {
			fn++
			if ok, ids := found("sample.txt", x); ok {
				fhit++
				fps = append(fps, fmt.Sprintf("%v %.80q", ids, x))
			}
		}
		tp, tpn, fp, fpn = tp+hit, tpn+n, fp+fhit, fpn+fn
		if n > 0 {
			rows = append(rows, fmt.Sprintf("%-40s %3d/%-3d fp %d/%d %.120q %v", s.Rule, hit, n, fhit, fn, missed, fps))
		}
	}
	slices.Sort(rows)
	t.Logf("gitleaks samples: %d/%d true positives found (%.1f%%), %d/%d false-positive samples matched\n%s",
		tp, tpn, 100*float64(tp)/float64(max(tpn, 1)), fp, fpn, strings.Join(rows, "\n"))
}
