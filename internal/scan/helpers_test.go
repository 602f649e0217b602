package scan

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"coffer/internal/scan/scangen"
)

// testDir holds images generated once per test binary.
var (
	testDir     string
	testDirOnce sync.Once
	testImages  sync.Map // name -> *genImage
)

type genImage struct {
	once  sync.Once
	path  string
	truth *scangen.Truth
	err   error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testDir != "" {
		os.RemoveAll(testDir)
	}
	os.Exit(code)
}

// generated returns the path and truth of a generated image, built once.
func generated(t testing.TB, name string, o scangen.Options) (string, *scangen.Truth) {
	t.Helper()
	testDirOnce.Do(func() {
		d, err := os.MkdirTemp("", "coffer-scan-test-")
		if err != nil {
			panic(err)
		}
		testDir = d
	})
	v, _ := testImages.LoadOrStore(name, &genImage{})
	g := v.(*genImage)
	g.once.Do(func() {
		g.path = filepath.Join(testDir, name+".tar")
		g.truth, g.err = scangen.WriteFile(g.path, o)
	})
	if g.err != nil {
		t.Fatalf("generating %s: %v", name, g.err)
	}
	return g.path, g.truth
}

// tinyImage is the labelled image with little filler: every planted secret
// and decoy, for tests that check plumbing rather than accuracy.
func tinyImage(t testing.TB) (string, *scangen.Truth) {
	return generated(t, "tiny", scangen.Options{Seed: 1, Filler: 256 << 10})
}

// smallImage is the standard labelled test image.
func smallImage(t testing.TB) (string, *scangen.Truth) {
	return generated(t, "small", scangen.Options{Seed: 1})
}

func newScanner(t testing.TB, cfg Config) *Scanner {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// scanTarget opens and scans target with a default scanner.
func scanTarget(t testing.TB, target string, o OpenOptions) (*Report, error) {
	t.Helper()
	ctx := context.Background()
	img, closeFn, err := OpenImage(ctx, target, o)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	return newScanner(t, Config{}).ScanImage(ctx, img, target)
}

// labels converts findings to the generator's labels for scoring.
func labels(rep *Report) []scangen.Label {
	out := make([]scangen.Label, len(rep.Findings))
	for i, f := range rep.Findings {
		l := scangen.Label{Rule: f.RuleID, Layer: -1, Path: f.Path, Line: f.Line}
		if f.Layer != nil {
			l.Layer = f.Layer.Index
		}
		switch {
		case f.DeletedIn >= 0:
			l.Status = fmt.Sprintf("deleted in layer %d", f.DeletedIn)
		case f.OverwrittenIn >= 0:
			l.Status = fmt.Sprintf("overwritten in layer %d", f.OverwrittenIn)
		}
		out[i] = l
	}
	return out
}

// requireDocker skips without a Docker engine, unless COFFER_REQUIRE_DOCKER=1.
func requireDocker(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("COFFER_REQUIRE_DOCKER") == "1" {
		t.Fatalf("Docker engine required (COFFER_REQUIRE_DOCKER=1): %v", err)
	}
	t.Skipf("no Docker engine: %v", err)
}
