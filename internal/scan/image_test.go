package scan

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"coffer/internal/scan/scangen"
)

// TestAccuracy scans the labelled image and prints recall and precision
// against its ground truth (goal: both at least 95%). Every decoy must stay
// quiet and every deleted or overwritten secret must say so.
func TestAccuracy(t *testing.T) {
	path, truth := smallImage(t)
	rep, err := scanTarget(t, path, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sc := truth.Evaluate(labels(rep))
	t.Logf("%d planted secrets of %d kinds, %d decoys: %s", len(truth.Secrets), truth.Kinds(), len(truth.Decoys), sc)
	for _, l := range sc.FalseNegatives {
		t.Errorf("missed %s (%s) at layer %d %s:%d", l.Rule, l.Where, l.Layer, l.Path, l.Line)
	}
	for _, l := range sc.FalsePositives {
		t.Errorf("false positive %s at layer %d %s:%d", l.Rule, l.Layer, l.Path, l.Line)
	}
	for _, l := range sc.WrongStatus {
		t.Errorf("%s at %s: status %q", l.Rule, l.Path, l.Status)
	}
	if sc.Recall() < 0.95 || sc.Precision() < 0.95 {
		t.Errorf("recall %.3f / precision %.3f below 0.95", sc.Recall(), sc.Precision())
	}
	// Every hiding place of the issue is covered by the image.
	where := map[string]bool{}
	for _, s := range truth.Secrets {
		where[s.Where] = true
	}
	for _, w := range []string{"plain", "deleted", "deleted-dir", "opaque-dir", "overwritten", "archive-tar",
		"archive-targz", "archive-jar", "nested-archive", "gzip-file", "binary", "config-env", "config-history",
		"dotfile", "vendored"} {
		if !where[w] {
			t.Errorf("no secret hidden as %q", w)
		}
	}
	if rep.Stats.Bytes == 0 || rep.Stats.Files == 0 || rep.Stats.Binary == 0 || rep.Stats.Archives == 0 {
		t.Errorf("stats not counted: %+v", rep.Stats)
	}
	for _, f := range rep.Findings {
		if (!strings.Contains(f.Excerpt, "****") && f.RuleID != "java-keystore") || len(f.Fingerprint) != 16 {
			t.Errorf("%s %s: excerpt %q fingerprint %q", f.RuleID, f.Path, f.Excerpt, f.Fingerprint)
		}
		if f.Layer != nil && !strings.HasPrefix(f.Layer.Digest, "sha256:") {
			t.Errorf("%s: layer digest %q", f.Path, f.Layer.Digest)
		}
	}
}

// TestDeterministic: two scans of one image give the same findings.
func TestDeterministic(t *testing.T) {
	path, _ := tinyImage(t)
	a, err := scanTarget(t, path, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := scanTarget(t, path, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Findings) != len(b.Findings) {
		t.Fatalf("%d vs %d findings", len(a.Findings), len(b.Findings))
	}
	for i := range a.Findings {
		if a.Findings[i].Fingerprint != b.Findings[i].Fingerprint || a.Findings[i].Path != b.Findings[i].Path {
			t.Errorf("finding %d differs: %+v vs %+v", i, a.Findings[i], b.Findings[i])
		}
	}
}

// TestSources scans the same image from every kind of target and expects
// the same findings.
func TestSources(t *testing.T) {
	path, truth := tinyImage(t)
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()

	gzPath, _ := generated(t, "tiny-gzip", scangen.Options{Seed: 1, Filler: 256 << 10, Gzip: true})

	layoutDir := filepath.Join(dir, "layout")
	lp, err := layout.Write(layoutDir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	ociTar := filepath.Join(dir, "oci.tar")
	if err := tarDir(layoutDir, ociTar); err != nil {
		t.Fatal(err)
	}

	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/coffer/test:1"
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ name, target string }{
		{"docker save tarball", path},
		{"docker save tarball, gzip layers", gzPath},
		{"docker-archive: prefix", "docker-archive:" + path},
		{"OCI layout directory", layoutDir},
		{"OCI layout tar", ociTar},
		{"oci: prefix", "oci:" + ociTar},
		{"registry", ref},
		{"registry:// prefix", "registry://" + ref},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := scanTarget(t, tc.target, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			sc := truth.Evaluate(labels(rep))
			if len(sc.FalseNegatives) > 0 || len(sc.FalsePositives) > 0 {
				t.Errorf("%s", sc)
			}
		})
	}
}

// TestDockerEngine scans docker://NAME from the real Docker engine.
func TestDockerEngine(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		requireDocker(t, err)
	}
	if out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		requireDocker(t, errors.New(strings.TrimSpace(string(out))))
	}
	tag := "coffer-scan-test/small:" + strings.ReplaceAll(t.Name(), "/", "-") + "-" + strconv.Itoa(os.Getpid())
	path, truth := generated(t, "tiny-docker", scangen.Options{Seed: 1, Filler: 256 << 10, Tag: tag})
	if out, err := exec.Command("docker", "load", "-i", path).CombinedOutput(); err != nil {
		t.Fatalf("docker load: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", tag).Run() })
	leftovers := func() int {
		m, _ := filepath.Glob(filepath.Join(os.TempDir(), "coffer-scan-*.tar"))
		return len(m)
	}
	before := leftovers()
	rep, err := scanTarget(t, "docker://"+tag, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := leftovers(); n > before {
		t.Errorf("%d temporary tarballs left behind", n-before)
	}
	sc := truth.Evaluate(labels(rep))
	t.Logf("docker://%s: %s", tag, sc)
	for _, l := range sc.FalseNegatives {
		t.Errorf("missed %s at layer %d %s:%d", l.Rule, l.Layer, l.Path, l.Line)
	}
	for _, l := range sc.FalsePositives {
		t.Errorf("unexpected %s at layer %d %s:%d", l.Rule, l.Layer, l.Path, l.Line)
	}
	if _, err := scanTarget(t, "docker://coffer-scan-test/absent:nope", OpenOptions{}); err == nil {
		t.Error("scanning an absent image succeeded")
	}
}

// tarDir packs a directory into a tar file (an OCI layout tar).
func tarDir(dir, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// TestPlatform picks the requested platform out of a multi-platform layout.
func TestPlatform(t *testing.T) {
	dir := t.TempDir()
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]v1.Hash{}
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(512, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := lp.AppendImage(img, layout.WithPlatform(v1.Platform{OS: "linux", Architecture: arch})); err != nil {
			t.Fatal(err)
		}
		want[arch], _ = img.Digest()
	}
	for _, arch := range []string{"amd64", "arm64"} {
		img, closeFn, err := OpenImage(context.Background(), dir, OpenOptions{Platform: &v1.Platform{OS: "linux", Architecture: arch}})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := img.Digest()
		_ = closeFn()
		if got != want[arch] {
			t.Errorf("%s: got image %s, want %s", arch, got, want[arch])
		}
	}
}

// TestCancel stops a scan when its context is cancelled.
func TestCancel(t *testing.T) {
	path, _ := tinyImage(t)
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := newScanner(t, Config{}).ScanImage(ctx, img, path); !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
}

// TestAccuracyLayout2 scans the second layout (another stack, other kinds
// and decoys in other places) and reports recall and precision per kind.
func TestAccuracyLayout2(t *testing.T) {
	path, truth := generated(t, "layout2", scangen.Options{Seed: 1, Layout: 2})
	rep, err := scanTarget(t, path, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sc := truth.Evaluate(labels(rep))
	t.Logf("layout 2: %d planted secrets of %d kinds, %d decoys: %s", len(truth.Secrets), truth.Kinds(), len(truth.Decoys), sc)
	for _, l := range sc.FalseNegatives {
		t.Errorf("missed %s (%s) at layer %d %s:%d", l.Rule, l.Where, l.Layer, l.Path, l.Line)
	}
	for _, l := range sc.FalsePositives {
		t.Errorf("false positive %s at layer %d %s:%d", l.Rule, l.Layer, l.Path, l.Line)
	}
	for _, l := range sc.WrongStatus {
		t.Errorf("%s at %s: status %q", l.Rule, l.Path, l.Status)
	}
	if sc.Recall() < 0.975 || sc.Precision() < 0.975 {
		t.Errorf("recall %.3f / precision %.3f below 0.975", sc.Recall(), sc.Precision())
	}
}

// TestAccuracyByKind prints, with -v, recall per kind of secret and
// precision per rule for both layouts, as tables for
// docs/benchmarks-scan.md.
func TestAccuracyByKind(t *testing.T) {
	if !testing.Verbose() {
		t.Skip("prints tables; run with -v")
	}
	for _, l := range []struct {
		name string
		o    scangen.Options
	}{{"layout 1", scangen.Options{Seed: 1}}, {"layout 2", scangen.Options{Seed: 1, Layout: 2}}} {
		path, truth := generated(t, "bykind-"+l.name, l.o)
		rep, err := scanTarget(t, path, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		kinds, rules := truth.ByKind(labels(rep))
		var sb strings.Builder
		fmt.Fprintf(&sb, "%s: %s\n\n| kind | planted | found |\n|---|---|---|\n", l.name, truth.Evaluate(labels(rep)))
		for _, k := range kinds {
			fmt.Fprintf(&sb, "| %s | %d | %d |\n", k.Name, k.Planted, k.Found)
		}
		fmt.Fprintf(&sb, "\n| rule | findings | false positives |\n|---|---|---|\n")
		for _, r := range rules {
			fmt.Fprintf(&sb, "| %s | %d | %d |\n", r.Name, r.Reported, r.FalsePos)
		}
		low := map[string]int{}
		for _, f := range rep.Low {
			low[f.RuleID]++
		}
		fmt.Fprintf(&sb, "\nlow confidence (not counted): %d %v\n", len(rep.Low), low)
		t.Log("\n" + sb.String())
	}
}
