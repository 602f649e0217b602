package scan

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"coffer/internal/scan/scangen"
)

// benchImage is the image the benchmarks read: the small labelled image, or
// the large one (~320 MB) with COFFER_SCAN_BENCH=large, or the image at
// $COFFER_SCAN_IMAGE (with its .truth.json beside it).
func benchImage(b *testing.B) (string, *scangen.Truth, int64) {
	b.Helper()
	var path string
	var truth *scangen.Truth
	if p := os.Getenv("COFFER_SCAN_IMAGE"); p != "" { // written by coffer-scangen, truth beside it
		tj, err := os.ReadFile(p + ".truth.json")
		if err != nil {
			b.Fatal(err)
		}
		truth = &scangen.Truth{}
		if err := json.Unmarshal(tj, truth); err != nil {
			b.Fatal(err)
		}
		path = p
	} else {
		name, o := "small", scangen.Options{Seed: 1}
		if os.Getenv("COFFER_SCAN_BENCH") == "large" {
			name, o = "large", scangen.Options{Seed: 1, Filler: scangen.LargeFiller}
		}
		path, truth = generated(b, name, o)
	}
	var total int64
	for _, n := range truth.LayerBytes {
		total += n
	}
	return path, truth, total
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScan scans the labelled image; MB/s counts uncompressed layer
// bytes. It also reports CPU-time throughput (what an idle 2-core machine
// would reach) and recall/precision.
func BenchmarkScan(b *testing.B) {
	path, truth, total := benchImage(b)
	ctx := context.Background()
	s := newScanner(b, Config{})
	b.SetBytes(total)
	var rep *Report
	cpu0 := cpuTime()
	for b.Loop() {
		img, err := tarball.ImageFromPath(path, nil)
		if err != nil {
			b.Fatal(err)
		}
		if rep, err = s.ScanImage(ctx, img, path); err != nil {
			b.Fatal(err)
		}
	}
	cpu := cpuTime() - cpu0
	sc := truth.Evaluate(labels(rep))
	b.ReportMetric(float64(total)*float64(b.N)/1e6/(cpu.Seconds()/2), "MB/s-2cpu")
	b.ReportMetric(100*sc.Recall(), "recall%")
	b.ReportMetric(100*sc.Precision(), "precision%")
}

// gitleaksPath finds the gitleaks binary: $GITLEAKS, /tmp/tools/gitleaks
// (see docs/benchmarks-scan.md), or PATH.
func gitleaksPath() (string, error) {
	for _, p := range []string{os.Getenv("GITLEAKS"), "/tmp/tools/gitleaks"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
	}
	return exec.LookPath("gitleaks")
}

// BenchmarkScanVsGitleaks scans the labelled image with coffer and with
// gitleaks in one run and reports both tools' throughput, recall and
// precision. gitleaks cannot read images: the layers are unpacked to a
// temporary directory first (not counted in its time), one directory per
// layer, and the config's env and history are written as files.
func BenchmarkScanVsGitleaks(b *testing.B) {
	gl, err := gitleaksPath()
	if err != nil {
		b.Skip("gitleaks not installed; see docs/benchmarks-scan.md")
	}
	path, truth, total := benchImage(b)
	ctx := context.Background()
	s := newScanner(b, Config{})
	for b.Loop() {
		img, err := tarball.ImageFromPath(path, nil)
		if err != nil {
			b.Fatal(err)
		}
		t0, c0 := time.Now(), cpuTime()
		rep, err := s.ScanImage(ctx, img, path)
		if err != nil {
			b.Fatal(err)
		}
		coffer, cofferCPU := time.Since(t0), cpuTime()-c0
		cs := truth.Evaluate(labels(rep))

		dir := b.TempDir()
		t1 := time.Now()
		if err := unpack(path, dir); err != nil {
			b.Fatal(err)
		}
		unpackTime := time.Since(t1)
		report := filepath.Join(b.TempDir(), "gitleaks.json")
		t2 := time.Now()
		cmd := exec.Command(gl, "dir", "--no-banner", "--max-archive-depth", "2", "--redact",
			"--report-format", "json", "--report-path", report, "--exit-code", "0", "--log-level", "error", dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("gitleaks: %v: %s", err, out)
		}
		gitleaks := time.Since(t2)
		gitleaksCPU := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		found, err := gitleaksLabels(report, dir)
		if err != nil {
			b.Fatal(err)
		}
		gs := truth.Evaluate(found)

		mb := float64(total) / 1e6
		b.ReportMetric(mb/coffer.Seconds(), "coffer-MB/s")
		b.ReportMetric(mb/gitleaks.Seconds(), "gitleaks-MB/s")
		b.ReportMetric(gitleaks.Seconds()/coffer.Seconds(), "speedup-x")
		// CPU time does not depend on what else runs on the machine.
		b.ReportMetric(gitleaksCPU.Seconds()/cofferCPU.Seconds(), "cpu-speedup-x")
		b.ReportMetric(100*cs.Recall(), "coffer-recall%")
		b.ReportMetric(100*gs.Recall(), "gitleaks-recall%")
		b.ReportMetric(100*cs.Precision(), "coffer-precision%")
		b.ReportMetric(100*gs.Precision(), "gitleaks-precision%")
		b.Logf("%.1f MB of layers; coffer %v (%v CPU): %s", mb, coffer.Round(time.Millisecond), cofferCPU.Round(time.Millisecond), cs)
		b.Logf("gitleaks %v (%v CPU; +%v to unpack): %s", gitleaks.Round(time.Millisecond), gitleaksCPU.Round(time.Millisecond), unpackTime.Round(time.Millisecond), gs)
		missed := map[string]int{}
		for _, l := range gs.FalseNegatives {
			missed[l.Where]++
			if testing.Verbose() {
				b.Logf("gitleaks missed %s (%s) at layer %d %s:%d", l.Rule, l.Where, l.Layer, l.Path, l.Line)
			}
		}
		b.Logf("gitleaks missed, by hiding place: %v", missed)
		for _, l := range gs.FalsePositives {
			b.Logf("gitleaks false positive: layer %d %s:%d", l.Layer, l.Path, l.Line)
		}
	}
}

// unpack writes each layer of a docker save tarball to dir/layer-N and the
// config's env and history to dir/config/{env,history}, as gitleaks needs.
func unpack(path, dir string) error {
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "config"), 0o755); err != nil {
		return err
	}
	var hist []string
	for _, h := range cf.History {
		hist = append(hist, h.CreatedBy)
	}
	if err := os.WriteFile(filepath.Join(dir, "config", "env"), []byte(strings.Join(cf.Config.Env, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config", "history"), []byte(strings.Join(hist, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return err
		}
		root := filepath.Join(dir, fmt.Sprintf("layer-%d", i))
		tr := tar.NewReader(rc)
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				rc.Close()
				return err
			}
			name, _ := cleanPath(hdr.Name)
			if hdr.Typeflag != tar.TypeReg || strings.HasPrefix(filepath.Base(name), ".wh.") {
				continue
			}
			p := filepath.Join(root, filepath.FromSlash(name))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				rc.Close()
				return err
			}
			f, err := os.Create(p)
			if err != nil {
				rc.Close()
				return err
			}
			_, err = io.Copy(f, tr)
			f.Close()
			if err != nil {
				rc.Close()
				return err
			}
		}
		rc.Close()
	}
	return nil
}

// gitleaksLabels reads a gitleaks JSON report and maps its files back to
// layers and paths. Rules are left empty: gitleaks names them differently.
func gitleaksLabels(report, dir string) ([]scangen.Label, error) {
	b, err := os.ReadFile(report)
	if err != nil {
		return nil, err
	}
	var fs []struct {
		File      string
		StartLine int
	}
	if err := json.Unmarshal(b, &fs); err != nil {
		return nil, err
	}
	out := make([]scangen.Label, 0, len(fs))
	for _, f := range fs {
		rel := strings.TrimPrefix(filepath.ToSlash(f.File), filepath.ToSlash(dir)+"/")
		l := scangen.Label{Layer: -1, Line: f.StartLine, Status: "-"}
		switch {
		case strings.HasPrefix(rel, "config/"):
			l.Path = "config:" + strings.TrimPrefix(rel, "config/")
		case strings.HasPrefix(rel, "layer-"):
			first, rest, _ := strings.Cut(rel, "/")
			fmt.Sscanf(first, "layer-%d", &l.Layer)
			l.Path = strings.ReplaceAll(rest, "!", "!/")
			l.Path = strings.ReplaceAll(l.Path, "!//", "!/")
		default:
			l.Path = rel
		}
		out = append(out, l)
	}
	return out, nil
}

// BenchmarkSideBySide times, in one run, sha256sum of the image tarball,
// the coffer binary scanning it and (if installed) gitleaks on the layers
// unpacked beforehand, alternating the three for $COFFER_SCAN_ROUNDS rounds
// (default 5) so that the machine's load affects all alike. It logs every
// round (wall, CPU, peak RSS) and the load average before and after, and
// reports the medians. The coffer binary is $COFFER_BIN or built into a
// temporary directory.
//
//	COFFER_SCAN_BENCH=large go test -run '^$' -bench BenchmarkSideBySide -benchtime 1x -v ./internal/scan/
func BenchmarkSideBySide(b *testing.B) {
	path, truth, total := benchImage(b)
	bin := os.Getenv("COFFER_BIN")
	if bin == "" {
		bin = filepath.Join(b.TempDir(), "coffer")
		cmd := exec.Command("go", "build", "-o", bin, "coffer/cmd/coffer")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("go build: %v: %s", err, out)
		}
	}
	rounds := 5
	if n, err := strconv.Atoi(os.Getenv("COFFER_SCAN_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	gl, glErr := gitleaksPath()
	dir := ""
	if glErr == nil {
		dir = b.TempDir()
		if err := unpack(path, dir); err != nil {
			b.Fatal(err)
		}
	}
	type sample struct{ wall, cpu, rss float64 }
	run := func(name string, args ...string) sample {
		cmd := exec.Command(name, args...)
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		wall := time.Since(t0)
		if err != nil {
			b.Fatalf("%s: %v: %.500s", name, err, out)
		}
		ps := cmd.ProcessState
		rss := 0.0
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			rss = float64(ru.Maxrss) / 1024 // KiB -> MiB
		}
		return sample{wall.Seconds(), (ps.UserTime() + ps.SystemTime()).Seconds(), rss}
	}
	load := func() string {
		l, _ := os.ReadFile("/proc/loadavg")
		return strings.Join(strings.Fields(string(l))[:3], " ")
	}
	mb := float64(total) / 1e6
	// Reports go to files of the benchmark's own: gitleaks (and a rename-
	// into-place writer) would replace /dev/null with a regular file.
	sink := filepath.Join(b.TempDir(), "report")
	for b.Loop() {
		b.Logf("%s: %.1f MB of layers, %d MB tarball; load average %s", filepath.Base(path), mb, fileSize(path)>>20, load())
		var sha, cof, gls []sample
		for i := range rounds {
			sha = append(sha, run("sha256sum", path))
			cof = append(cof, run(bin, "scan", "image", path, "--fail-on", "none", "--progress", "never", "-o", "json", "--output-file", sink))
			line := fmt.Sprintf("round %d: sha256sum %.2fs (%.2fs CPU, %.0f MiB) | coffer %.2fs (%.2fs CPU, %.0f MiB)",
				i+1, sha[i].wall, sha[i].cpu, sha[i].rss, cof[i].wall, cof[i].cpu, cof[i].rss)
			if dir != "" {
				gls = append(gls, run(gl, "dir", "--no-banner", "--max-archive-depth", "2", "--redact", "--report-format", "json",
					"--report-path", sink, "--exit-code", "0", "--log-level", "error", dir))
				line += fmt.Sprintf(" | gitleaks %.2fs (%.2fs CPU, %.0f MiB)", gls[i].wall, gls[i].cpu, gls[i].rss)
			}
			b.Log(line)
		}
		med := func(ss []sample, f func(sample) float64) float64 {
			v := make([]float64, len(ss))
			for i, s := range ss {
				v[i] = f(s)
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		wall := func(s sample) float64 { return s.wall }
		cpu := func(s sample) float64 { return s.cpu }
		rss := func(s sample) float64 { return s.rss }
		b.ReportMetric(med(sha, wall), "sha256sum-s")
		b.ReportMetric(med(cof, wall), "coffer-s")
		b.ReportMetric(med(cof, rss), "coffer-MiB")
		b.ReportMetric(med(sha, wall)/med(cof, wall), "coffer-vs-sha256sum-x")
		b.Logf("medians: sha256sum %.2fs wall %.2fs CPU; coffer %.2fs wall %.2fs CPU %.0f MiB RSS (%.0f MB/s)",
			med(sha, wall), med(sha, cpu), med(cof, wall), med(cof, cpu), med(cof, rss), mb/med(cof, wall))
		if len(gls) > 0 {
			b.ReportMetric(med(gls, wall), "gitleaks-s")
			b.ReportMetric(med(gls, wall)/med(cof, wall), "coffer-vs-gitleaks-x")
			b.Logf("gitleaks %.2fs wall %.2fs CPU %.0f MiB RSS: coffer %.1fx faster (wall), %.1fx less CPU",
				med(gls, wall), med(gls, cpu), med(gls, rss), med(gls, wall)/med(cof, wall), med(gls, cpu)/med(cof, cpu))
		}
		b.Logf("load average after: %s; ground truth: %d secrets", load(), len(truth.Secrets))
	}
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}
