package scan

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// maxSkippedInTable bounds the skipped files listed by WriteTable (JSON and
// SARIF list them all).
const maxSkippedInTable = 50

// WriteTable writes a human-readable report: one row per finding, the
// low-confidence findings apart, then a summary with the files that could
// not be scanned.
func WriteTable(w io.Writer, rep *Report) error {
	ew := &errWriter{w: w}
	row := func(tw io.Writer, f *Finding, ctx bool) {
		layer := "-"
		if f.Layer != nil {
			layer = strconv.Itoa(f.Layer.Index)
		}
		last := f.Status()
		if ctx {
			last = strings.Join(f.Context, "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			f.Severity, f.Confidence, f.RuleID, layer, location(f), f.Excerpt, f.Fingerprint, dashIfEmpty(last))
	}
	if len(rep.Findings) > 0 {
		tw := tabwriter.NewWriter(ew, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEVERITY\tCONFIDENCE\tRULE\tLAYER\tLOCATION\tEXCERPT\tFINGERPRINT\tSTATUS")
		for i := range rep.Findings {
			row(tw, &rep.Findings[i], false)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(ew)
	}
	if len(rep.Low) > 0 {
		fmt.Fprintf(ew, "%d low-confidence finding(s), not counted by --fail-on unless --include-low:\n", len(rep.Low))
		tw := tabwriter.NewWriter(ew, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEVERITY\tCONFIDENCE\tRULE\tLAYER\tLOCATION\tEXCERPT\tFINGERPRINT\tWHY")
		for i := range rep.Low {
			row(tw, &rep.Low[i], true)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(ew)
	}
	st := rep.Stats
	secs := st.Duration.Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(st.Bytes) / 1e6 / secs
	}
	layers := ""
	if rep.Kind == "image" {
		layers = fmt.Sprintf("%d layer(s), ", st.Layers)
	}
	fmt.Fprintf(ew, "%s: %d finding(s), %d of low confidence; %s%d file(s), %.1f MB in %.2fs (%.0f MB/s); %d binary, %d archive(s) opened",
		rep.Target, len(rep.Findings), len(rep.Low), layers, st.Files, float64(st.Bytes)/1e6, secs, rate, st.Binary, st.Archives)
	if st.Suppressed > 0 {
		fmt.Fprintf(ew, "; %d suppressed by .cofferignore", st.Suppressed)
	}
	fmt.Fprintln(ew)
	if len(rep.Skipped) > 0 {
		fmt.Fprintf(ew, "%d file(s) not fully scanned:\n", len(rep.Skipped))
		for i, s := range rep.Skipped {
			if i == maxSkippedInTable {
				fmt.Fprintf(ew, "  ... and %d more (see -o json)\n", len(rep.Skipped)-i)
				break
			}
			where := ""
			if s.Layer != nil {
				where = fmt.Sprintf("layer %d: ", s.Layer.Index)
			}
			fmt.Fprintf(ew, "  %s%s (%s, %d bytes)\n", where, s.Path, s.Reason, s.Size)
		}
	}
	for _, w := range rep.Warnings {
		fmt.Fprintf(ew, "warning: %s\n", w)
	}
	return ew.err
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func location(f *Finding) string {
	switch {
	case f.Binary:
		return fmt.Sprintf("%s@%d", f.Path, f.Offset)
	case f.Line > 0:
		return fmt.Sprintf("%s:%d", f.Path, f.Line)
	}
	return f.Path
}

// WriteJSON writes the report as indented JSON (snake_case fields, like
// the REST API); each finding also carries its status.
func WriteJSON(w io.Writer, rep *Report) error {
	type jsonFinding struct {
		*Finding
		Status string `json:"status"`
	}
	list := func(fs []Finding) []jsonFinding {
		out := make([]jsonFinding, len(fs))
		for i := range fs {
			out[i] = jsonFinding{&fs[i], fs[i].Status()}
		}
		return out
	}
	out := struct {
		*Report
		Findings []jsonFinding `json:"findings"`
		Low      []jsonFinding `json:"low_confidence"`
	}{Report: rep, Findings: list(rep.Findings), Low: list(rep.Low)}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

// sarifLevel maps a severity to a SARIF result level.
func sarifLevel(s Severity) string {
	switch {
	case s >= SeverityHigh:
		return "error"
	case s == SeverityMedium:
		return "warning"
	}
	return "note"
}

// securitySeverity is the score GitHub code scanning reads from a rule.
func securitySeverity(s Severity) string {
	return map[Severity]string{SeverityLow: "3.0", SeverityMedium: "5.5", SeverityHigh: "8.0", SeverityCritical: "9.5"}[s]
}

// sarifURI turns a finding path into a relative URI reference.
func sarifURI(p string) string {
	return strings.TrimPrefix(strings.ReplaceAll(p, " ", "%20"), "/")
}
