package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// Summary is one latency distribution, in milliseconds.
type Summary struct {
	Name   string    `json:"name"`
	N      int       `json:"n"`
	P50    float64   `json:"p50_ms"`
	P90    float64   `json:"p90_ms"`
	P99    float64   `json:"p99_ms"`
	Max    float64   `json:"max_ms"`
	Mean   float64   `json:"mean_ms"`
	Goal   string    `json:"goal,omitempty"`
	raw    []float64 // samples in ms, sorted, for the plot
	noPlot bool      // not a delivery: left out of the plot
}

// summarize sorts samples (durations) and takes percentiles by the
// nearest-rank method.
func summarize(name string, samples []time.Duration) Summary {
	ms := make([]float64, len(samples))
	sum := 0.0
	for i, d := range samples {
		ms[i] = float64(d) / float64(time.Millisecond)
		sum += ms[i]
	}
	slices.Sort(ms)
	s := Summary{Name: name, N: len(ms), raw: ms}
	if len(ms) == 0 {
		return s
	}
	s.P50, s.P90, s.P99 = rank(ms, 0.50), rank(ms, 0.90), rank(ms, 0.99)
	s.Max = ms[len(ms)-1]
	s.Mean = sum / float64(len(ms))
	return s
}

func rank(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Figure is one measured number that is not a latency distribution.
type Figure struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	Goal  string  `json:"goal,omitempty"`
}

// Machine describes where a run happened.
type Machine struct {
	Cores  int    `json:"cores"`
	MemGiB int    `json:"mem_gib"`
	OS     string `json:"os"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
}

// Report is the JSON output of every mode.
type Report struct {
	Mode      string         `json:"mode"`
	Date      string         `json:"date"`
	Commit    string         `json:"commit"`
	Command   string         `json:"command"`
	Machine   Machine        `json:"machine"`
	Params    map[string]any `json:"params"`
	Latencies []Summary      `json:"latencies"`
	Figures   []Figure       `json:"figures"`
	Notes     []string       `json:"notes,omitempty"`
}

func newReport(mode string, params map[string]any) *Report {
	return &Report{
		Mode: mode, Date: time.Now().UTC().Format(time.RFC3339), Commit: commit(),
		Command: strings.Join(os.Args, " "), Machine: machine(), Params: params,
	}
}

func (r *Report) addLatency(s Summary, goal string) *Summary {
	s.Goal = goal
	r.Latencies = append(r.Latencies, s)
	return &r.Latencies[len(r.Latencies)-1]
}

func (r *Report) addFigure(name string, v float64, unit, goal string) {
	r.Figures = append(r.Figures, Figure{Name: name, Value: v, Unit: unit, Goal: goal})
}

func (r *Report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// printTable writes the report for people.
func (r *Report) printTable(w io.Writer) {
	fmt.Fprintf(w, "coffer-bench %s  %s  commit %s  %d cores, %d GiB, %s, kernel %s\n",
		r.Mode, r.Date, r.Commit, r.Machine.Cores, r.Machine.MemGiB, r.Machine.OS, r.Machine.Kernel)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if len(r.Latencies) > 0 {
		fmt.Fprintln(tw, "latency\tn\tp50 ms\tp90 ms\tp99 ms\tmax ms\tgoal\t")
		for _, s := range r.Latencies {
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t\n", s.Name, s.N, s.P50, s.P90, s.P99, s.Max, s.Goal)
		}
		tw.Flush()
	}
	if len(r.Figures) > 0 {
		fmt.Fprintln(tw, "figure\tvalue\tunit\tgoal\t")
		for _, f := range r.Figures {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", f.Name, fmtNum(f.Value), f.Unit, f.Goal)
		}
		tw.Flush()
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

func fmtNum(v float64) string {
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// writeJSON writes the report to path ("-" for stdout; "" for nowhere).
func (r *Report) writeJSON(path string) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = os.Stdout.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// commit is the working tree's commit, if git can tell.
func commit() string {
	out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		c += "+dirty"
	}
	return c
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if fs, err := procfs.NewDefaultFS(); err == nil {
		if mi, err := fs.Meminfo(); err == nil && mi.MemTotal != nil {
			m.MemGiB = int(math.Round(float64(*mi.MemTotal) / (1 << 20)))
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if f, err := os.Open("/etc/os-release"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
		f.Close()
	}
	return m
}
