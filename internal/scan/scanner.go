package scan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"coffer/internal/secret"
)

// Sentinel errors; scan errors wrap one of them.
var (
	ErrCorrupt        = errors.New("corrupt image")
	ErrDigestMismatch = errors.New("layer digest mismatch")
	ErrTooLarge       = errors.New("layer larger than the limit (decompression bomb?)")
	ErrNotImage       = errors.New("not an image")
)

// Defaults for Config fields left zero.
const (
	DefaultMaxFileSize     = 64 << 20
	DefaultMaxArchiveDepth = 2
	DefaultMaxArchiveBytes = 1 << 30
	DefaultMaxLayerSize    = 32 << 30
	DefaultProgressEvery   = 250 * time.Millisecond
)

// Config configures a Scanner. The zero value is usable.
type Config struct {
	Rules           *Rules         // nil: the built-in rules
	Ignore          *Ignore        // findings to suppress; nil: none
	MaxFileSize     int64          // larger files (and archive members) are listed as skipped
	MaxArchiveDepth int            // archives nested deeper are listed as skipped
	MaxArchiveBytes int64          // total bytes decompressed out of one file, all levels
	MaxLayerSize    int64          // a layer expanding beyond this is an error
	Workers         int            // detection goroutines; default GOMAXPROCS
	Logger          *slog.Logger   // nil: discard
	Progress        func(Progress) // called every ProgressEvery while scanning; optional
	ProgressEvery   time.Duration
	// KeepValues keeps each finding's value (Finding.Secret) for an
	// import; call Report.Zero when done. Off, values never leave the
	// detection workers.
	KeepValues bool
}

// Progress is a snapshot of a running scan.
type Progress struct {
	Layers, LayersDone int
	Files              int64
	Bytes              int64 // uncompressed layer (or directory) bytes read so far
	Elapsed            time.Duration
}

// Scanner finds secrets in images and directories.
type Scanner struct {
	cfg Config
}

// New returns a Scanner, loading the built-in rules if cfg.Rules is nil.
func New(cfg Config) (*Scanner, error) {
	if cfg.Rules == nil {
		rs, err := LoadRules()
		if err != nil {
			return nil, err
		}
		cfg.Rules = rs
	}
	if cfg.MaxFileSize <= 0 {
		cfg.MaxFileSize = DefaultMaxFileSize
	}
	if cfg.MaxArchiveDepth <= 0 {
		cfg.MaxArchiveDepth = DefaultMaxArchiveDepth
	}
	if cfg.MaxArchiveBytes <= 0 {
		cfg.MaxArchiveBytes = DefaultMaxArchiveBytes
	}
	if cfg.MaxLayerSize <= 0 {
		cfg.MaxLayerSize = DefaultMaxLayerSize
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = DefaultProgressEvery
	}
	return &Scanner{cfg: cfg}, nil
}

// Rules returns the rules the scanner runs.
func (s *Scanner) Rules() *Rules { return s.cfg.Rules }

// Reasons a file is listed as skipped.
const (
	SkipTooLarge    = "too large"
	SkipTooDeep     = "archive nested too deep"
	SkipCorrupt     = "corrupt or truncated archive"
	SkipBomb        = "decompression bomb"
	SkipUnsupported = "unsupported compression (raw bytes scanned)"
	SkipEncrypted   = "encrypted archive member"
	SkipMedia       = "image, audio, video or font (no text to scan)"
)

// Skipped is a file that could not be scanned (fully).
type Skipped struct {
	Layer  *LayerRef `json:"layer,omitempty"`
	Path   string    `json:"path"`
	Reason string    `json:"reason"`
	Size   int64     `json:"size"`
}

// Stats counts what a scan read.
type Stats struct {
	Layers     int           `json:"layers"`
	Files      int64         `json:"files"`         // regular files and archive members scanned
	Bytes      int64         `json:"bytes"`         // uncompressed layer (or directory) bytes read
	Scanned    int64         `json:"scanned_bytes"` // content bytes run through the rules, decompressed included
	Binary     int64         `json:"binary_files"`  // files scanned as binaries (printable strings)
	Archives   int64         `json:"archives"`      // archives and gzip files opened
	Skipped    int           `json:"skipped"`
	Suppressed int           `json:"suppressed"`  // findings matched by .cofferignore
	Duration   time.Duration `json:"duration_ns"` // wall-clock time of the scan
}

// Report is the result of one scan. Findings holds the findings of high
// and medium confidence; Low those of low confidence (test fixtures,
// documentation examples, defaults), reported apart and not counted by
// CountAtLeast.
type Report struct {
	Target   string    `json:"target"`
	Kind     string    `json:"kind"` // "image" or "dir"
	Findings []Finding `json:"findings"`
	Low      []Finding `json:"low_confidence"`
	Skipped  []Skipped `json:"skipped"`
	Warnings []string  `json:"warnings"`
	Stats    Stats     `json:"stats"`
}

// CountAtLeast counts findings of severity s or higher; with low, the
// low-confidence ones too.
func (r *Report) CountAtLeast(s Severity, low bool) int {
	n := 0
	for i := range r.Findings {
		if r.Findings[i].Severity >= s {
			n++
		}
	}
	if low {
		for i := range r.Low {
			if r.Low[i].Severity >= s {
				n++
			}
		}
	}
	return n
}

// Zero wipes the values kept with Config.KeepValues.
func (r *Report) Zero() {
	for _, fs := range [][]Finding{r.Findings, r.Low} {
		for i := range fs {
			fs[i].value.Zero()
			fs[i].value = nil
		}
	}
}

// maxLowPerFile bounds the low-confidence findings listed per file (a test
// log can hold a hundred thousand); the rest are counted in a warning.
const maxLowPerFile = 50

// job is one file handed from a reader to the workers.
type job struct {
	layer  *LayerRef
	source string
	path   string
	data   []byte
	buf    *[]byte // pooled; nil when data is not pooled
}

// run is the state of one scan.
type run struct {
	s     *Scanner
	ctx   context.Context
	start time.Time
	jobs  chan job
	wg    sync.WaitGroup

	mu       sync.Mutex
	findings []Finding
	skipped  []Skipped
	warnings []string
	supp     int
	docs     map[string]map[uint64]bool // package -> hashes of the words in its documentation
	seed     maphash.Seed

	layers, layersDone                      atomic.Int64
	files, bytes, scanned, binary, archives atomic.Int64
}

func (s *Scanner) newRun(ctx context.Context) *run {
	r := &run{s: s, ctx: ctx, start: time.Now(), jobs: make(chan job, 4*s.cfg.Workers),
		docs: map[string]map[uint64]bool{}, seed: maphash.MakeSeed()}
	for range s.cfg.Workers {
		r.wg.Add(1)
		go r.worker()
	}
	return r
}

// progress calls cfg.Progress periodically until stop is closed.
func (r *run) progress(stop <-chan struct{}) {
	if r.s.cfg.Progress == nil {
		return
	}
	t := time.NewTicker(r.s.cfg.ProgressEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			r.s.cfg.Progress(Progress{
				Layers: int(r.layers.Load()), LayersDone: int(r.layersDone.Load()),
				Files: r.files.Load(), Bytes: r.bytes.Load(), Elapsed: time.Since(r.start),
			})
		}
	}
}

func (r *run) worker() {
	defer r.wg.Done()
	d := r.s.cfg.Rules.newDetector()
	for j := range r.jobs {
		if r.ctx.Err() == nil {
			budget := r.s.cfg.MaxArchiveBytes
			r.content(d, j.layer, j.source, j.path, j.data, 0, &budget)
		}
		if j.buf != nil {
			putBuf(j.buf)
		} else {
			clear(j.data) // config text holds ENV values
		}
	}
}

// submit hands a file to the workers; it takes ownership of buf.
func (r *run) submit(j job) error {
	select {
	case r.jobs <- j:
		return nil
	case <-r.ctx.Done():
		if j.buf != nil {
			putBuf(j.buf)
		}
		return r.ctx.Err()
	}
}

// finish waits for the workers and builds the report.
func (r *run) finish(target, kind string) *Report {
	close(r.jobs)
	r.wg.Wait()
	rep := &Report{
		Target: target, Kind: kind,
		Findings: []Finding{}, Low: []Finding{}, Skipped: r.skipped, Warnings: r.warnings,
		Stats: Stats{
			Layers: int(r.layers.Load()), Files: r.files.Load(), Bytes: r.bytes.Load(),
			Scanned: r.scanned.Load(), Binary: r.binary.Load(), Archives: r.archives.Load(),
			Skipped: len(r.skipped), Suppressed: r.supp, Duration: time.Since(r.start),
		},
	}
	lowPerFile := map[string]int{}
	for _, f := range r.findings {
		if !classifyPath(f.Path).docs && r.docs[f.pkg][f.vhash] {
			f.reasons = append(f.reasons, reasonDocumented)
		}
		f.Confidence = confidenceOf(f.reasons, f.highSignal)
		for _, rs := range f.reasons {
			f.Context = append(f.Context, rs.text)
		}
		if f.Confidence == ConfidenceLow {
			if lowPerFile[f.Path]++; lowPerFile[f.Path] <= maxLowPerFile {
				rep.Low = append(rep.Low, f)
			}
		} else {
			rep.Findings = append(rep.Findings, f)
		}
	}
	r.findings = nil
	var capped []string
	for p, n := range lowPerFile {
		if n > maxLowPerFile {
			capped = append(capped, fmt.Sprintf("%s: %d more low-confidence findings not listed", p, n-maxLowPerFile))
		}
	}
	slices.Sort(capped)
	rep.Warnings = append(rep.Warnings, capped...)
	if rep.Skipped == nil {
		rep.Skipped = []Skipped{}
	}
	if rep.Warnings == nil {
		rep.Warnings = []string{}
	}
	slices.SortFunc(rep.Findings, compareFindings)
	slices.SortFunc(rep.Low, compareFindings)
	slices.SortFunc(rep.Skipped, func(a, b Skipped) int {
		if c := layerIndex(a.Layer) - layerIndex(b.Layer); c != 0 {
			return c
		}
		return strings.Compare(a.Path, b.Path)
	})
	return rep
}

func layerIndex(l *LayerRef) int {
	if l == nil {
		return -1
	}
	return l.Index
}

func compareFindings(a, b Finding) int {
	if c := layerIndex(a.Layer) - layerIndex(b.Layer); c != 0 {
		return c
	}
	if c := strings.Compare(a.Path, b.Path); c != 0 {
		return c
	}
	if c := a.Line - b.Line; c != 0 {
		return c
	}
	if c := int(a.Offset - b.Offset); c != 0 {
		return c
	}
	return strings.Compare(a.RuleID, b.RuleID)
}

func (r *run) warn(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	r.s.cfg.Logger.Warn("scan: " + msg)
	r.mu.Lock()
	r.warnings = append(r.warnings, msg)
	r.mu.Unlock()
}

func (r *run) skip(layer *LayerRef, path, reason string, size int64) {
	r.mu.Lock()
	r.skipped = append(r.skipped, Skipped{Layer: layer, Path: path, Reason: reason, Size: size})
	r.mu.Unlock()
}

// report turns matches in data into findings.
func (r *run) report(layer *LayerRef, source, path string, data []byte, binary bool, ms []match) {
	if len(ms) == 0 {
		return
	}
	pc := classifyPath(path)
	pkg := packageOf(path)
	out := make([]Finding, 0, len(ms))
	for _, m := range ms {
		v := data[m.start:m.end]
		f := Finding{
			RuleID: m.rule.ID, Description: m.rule.Description, Severity: m.rule.sev,
			Layer: layer, Source: source, Path: path,
			Fingerprint: Fingerprint(m.rule.ID, path, v),
			DeletedIn:   -1, OverwrittenIn: -1,
			highSignal: m.rule.highSignal && !m.badChecksum,
			importMode: m.rule.Import,
			pkg:        pkg,
			vhash:      maphash.Bytes(r.seed, v),
		}
		f.File, f.Member, _ = strings.Cut(path, "!/")
		if m.note != "" {
			f.Excerpt = m.note
		} else {
			f.Excerpt = excerpt(data, ms, m)
		}
		if binary {
			f.Binary, f.Offset = true, int64(m.start)
		} else {
			f.Line = 1 + countLines(data[:m.start])
		}
		if source == "config" {
			f.Config = configRef(path, data, f.Line)
		}
		f.reasons = pc.reasons()
		hostCtx := data[m.mstart:m.mend]
		if m.rule.lineCtx != nil {
			hostCtx = data[lineStart(data, m.mstart):m.mend]
		}
		f.reasons = append(f.reasons, hostReasons(hostCtx)...)
		if len(v) <= 64 && defaultCredential(credentialUser(m.rule.ID, data, m), v) || encodedDefault(m.rule, v) {
			f.reasons = append(f.reasons, reasonDefault)
		}
		if m.badChecksum {
			f.reasons = append(f.reasons, reasonChecksum)
		}
		if m.rule.parsed() && testKeyName(data, m.mstart) {
			f.reasons = append(f.reasons, reasonTestName)
		}
		if r.s.cfg.Ignore.Match(&f) {
			r.mu.Lock()
			r.supp++
			r.mu.Unlock()
			continue
		}
		if r.s.cfg.KeepValues {
			f.value = importValue(m, data)
		}
		out = append(out, f)
	}
	r.mu.Lock()
	r.findings = append(r.findings, out...)
	r.mu.Unlock()
}

// noteDocs remembers the words of a documentation file, so that a value
// also printed in its package's documentation is taken for an example.
func (r *run) noteDocs(path string, data []byte) {
	var hs []uint64
	docTokens(data[:min(len(data), 1<<20)], func(tok []byte) {
		hs = append(hs, maphash.Bytes(r.seed, tok))
	})
	if len(hs) == 0 {
		return
	}
	pkg := packageOf(path)
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.docs[pkg]
	if m == nil {
		m = map[uint64]bool{}
		r.docs[pkg] = m
	}
	for _, h := range hs {
		m[h] = true
	}
}

// configRef says which config entry line (1-based) of a config part is.
func configRef(path string, data []byte, line int) *ConfigRef {
	field := map[string]string{"config:env": "Env", "config:labels": "Labels",
		"config:entrypoint": "Entrypoint", "config:history": "History"}[path]
	if field == "" {
		return nil
	}
	ref := &ConfigRef{Field: field, Index: line - 1}
	if field == "Env" || field == "Labels" {
		lines := bytes.SplitN(data, []byte("\n"), line+1)
		if line-1 < len(lines) {
			if k, _, ok := bytes.Cut(lines[line-1], []byte("=")); ok {
				ref.Key = string(k)
			}
		}
	}
	return ref
}

// importValue is what an import stores for m: the secret itself, the
// whole match (a PEM block, JSON escapes undone) or the whole file.
func importValue(m match, data []byte) secret.Value {
	var v []byte
	switch m.rule.Import {
	case "file":
		v = data
	case "match":
		v = data[m.mstart:m.mend]
		if bytes.Contains(v, []byte(`\n`)) && !bytes.Contains(v, []byte("\n")) {
			return secret.Value(bytes.ReplaceAll(v, []byte(`\n`), []byte("\n")))
		}
	default:
		v = data[m.start:m.end]
	}
	return secret.Value(bytes.Clone(v))
}

func countLines(b []byte) int {
	return bytes.Count(b, []byte{'\n'})
}

// excerpt shows m's regex match with every secret in it redacted: at most
// 48 bytes before the secret and 24 after it, never beyond the match.
func excerpt(data []byte, all []match, m match) string {
	from := max(m.mstart, m.start-48)
	to := max(m.end, min(m.mend, m.end+24))
	var sb strings.Builder
	pos := from
	for _, o := range all {
		if o.end <= pos || o.start >= to {
			continue
		}
		if o.start < pos { // a secret straddling the start: hide its tail
			sb.WriteString("****")
			pos = min(o.end, to)
			continue
		}
		sb.WriteString(printable(data[pos:o.start]))
		sb.WriteString(redact(data[o.start:o.end]))
		pos = o.end
	}
	if pos < to {
		sb.WriteString(printable(data[pos:to]))
	}
	s := strings.TrimSpace(sb.String())
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}
