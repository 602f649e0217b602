package scan

import (
	"bytes"
	"slices"
	"strings"
)

// Window sizes around a keyword hit, in bytes.
const (
	maxBack      = 512      // key names sit before their keyword
	maxFwd       = 1024     // tokens and values follow it
	maxMultiline = 16 << 10 // PEM blocks and JSON key files
	maxPathOnly  = 1 << 20  // rules without keywords read this much of a file
	maxAllowLen  = 256      // global allow patterns apply to values up to this long
)

// match is a secret located in a buffer; start:end is the secret,
// mstart:mend the whole regex match.
type match struct {
	rule                     *compiledRule
	start, end, mstart, mend int
	badChecksum              bool   // the rule has a checksum and the token fails it
	note                     string // excerpt of a structural (format) finding
}

type window struct{ start, end int }

// detector holds one goroutine's scratch space for running the rules.
type detector struct {
	rs      *Rules
	wins    [][]window // per rule
	touched []int
	matches []match
	hits    []hit
	pathOK  []int8 // per rule, for this file: 0 unknown, 1 matches, -1 not
}

func (rs *Rules) newDetector() *detector {
	return &detector{rs: rs, wins: make([][]window, len(rs.rules)), pathOK: make([]int8, len(rs.rules))}
}

// find runs the rules over data, the content of the file at path. In a
// binary file, a match is confined to the run of printable bytes around its
// keyword. The returned slice is reused by the next call.
func (d *detector) find(path string, data []byte, binary bool) []match {
	d.matches = d.matches[:0]
	clear(d.pathOK)
	code := isSourceCode(path)
	if binary {
		d.hits = d.rs.pf.scanBinary(data, d.hits[:0])
	} else {
		d.hits = d.rs.pf.scan(data, d.hits[:0])
	}
	for _, h := range d.hits {
		e := int(h.end)
		s := e - int(d.rs.pf.lens[h.kw])
		for _, kr := range d.rs.byKW[h.kw] {
			if kr.exact != nil && !bytes.Equal(data[s:e], kr.exact) {
				continue
			}
			r := d.rs.rules[kr.rule]
			if r.path != nil && !d.pathMatches(kr.rule, path) {
				continue
			}
			if r.parsed() {
				if a, ok := parseAssign(r, data, s, e, binary); ok && (a.quoted || !code || !r.QuotedInCode) && (!binary || letterAndDigit(data[a.vs:a.ve])) {
					d.consider(r, data, a.vs, a.ve, a.ks, a.end)
				}
				continue
			}
			if r.Assign && !assigned(r, data, e) {
				continue
			}
			ws, we := bounds(data, s, e, binary, r.Multiline)
			if r.WordStart {
				ws = wordStart(data, s)
			}
			d.addWindow(kr.rule, ws, we, r.WordStart)
		}
	}
	for _, ri := range d.rs.pathOnly {
		if d.rs.rules[ri].path.MatchString(path) {
			d.addWindow(ri, 0, min(len(data), maxPathOnly), false)
		}
	}
	for _, ri := range d.touched {
		for _, w := range d.wins[ri] {
			d.run(ri, data, w)
		}
		d.wins[ri] = d.wins[ri][:0]
	}
	d.touched = d.touched[:0]
	for _, ri := range d.rs.formats {
		r := d.rs.rules[ri]
		if r.path != nil && !r.path.MatchString(path) {
			continue
		}
		if note, ok := r.format(data); ok {
			d.matches = append(d.matches, match{rule: r, start: 0, end: len(data), mstart: 0, mend: len(data), note: note})
		}
	}
	d.matches = resolveOverlaps(d.matches)
	return d.matches
}

// sourceExts are the extensions of program source, where an unquoted
// value is an expression (a variable, a call), not a literal.
var sourceExts = set(".go", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".py", ".rb", ".java", ".kt", ".kts",
	".scala", ".cs", ".php", ".swift", ".rs", ".c", ".h", ".cc", ".cpp", ".hpp", ".m", ".mm", ".lua", ".pl", ".pm",
	".groovy", ".dart", ".ex", ".exs", ".erl", ".clj", ".vue", ".svelte", ".fs", ".vb", ".r", ".jl",
	".tcc", ".ipp", ".inl", ".hh", ".hxx", ".cxx", ".tpp", ".pyc", ".class", ".vim", ".td", ".el", ".lisp")

func isSourceCode(p string) bool {
	if i := strings.LastIndexByte(p, '.'); i >= 0 && i > strings.LastIndexByte(p, '/') {
		return sourceExts[strings.ToLower(p[i:])]
	}
	return false
}

// pathMatches reports whether rule ri's path regex matches path, once per
// file.
func (d *detector) pathMatches(ri int, path string) bool {
	if d.pathOK[ri] == 0 {
		d.pathOK[ri] = -1
		if d.rs.rules[ri].path.MatchString(path) {
			d.pathOK[ri] = 1
		}
	}
	return d.pathOK[ri] == 1
}

// addWindow records a window for rule ri, merging it with the previous one
// if they overlap. Anchored windows (wordStart) merge only when they start at
// the same word: a merged window would lose the later word's anchor.
func (d *detector) addWindow(ri, ws, we int, anchored bool) {
	w := d.wins[ri]
	if len(w) == 0 {
		d.touched = append(d.touched, ri)
	} else if last := &w[len(w)-1]; anchored && ws == last.start {
		last.end = max(last.end, we)
		return
	} else if !anchored && ws <= last.end && we >= last.start {
		last.start, last.end = min(last.start, ws), max(last.end, we)
		return
	}
	d.wins[ri] = append(w, window{ws, we})
}

// bounds returns the window around the keyword at data[s:e]: its line (or
// printable run in a binary), clipped to maxBack before and maxFwd after; a
// multiline rule gets maxMultiline bytes after the keyword.
func bounds(data []byte, s, e int, binary, multiline bool) (int, int) {
	lo, hi := max(0, s-maxBack), min(len(data), e+maxFwd)
	if multiline {
		hi = min(len(data), e+maxMultiline)
	}
	if !binary {
		ws := lo
		if i := bytes.LastIndexByte(data[lo:s], '\n'); i >= 0 {
			ws = lo + i + 1
		}
		if multiline {
			return ws, hi
		}
		we := hi
		if i := bytes.IndexByte(data[e:hi], '\n'); i >= 0 {
			we = e + i
		}
		return ws, we
	}
	ws := s
	for ws > lo && printableByte(data[ws-1], multiline) {
		ws--
	}
	we := e
	for we < hi && printableByte(data[we], multiline) {
		we++
	}
	return ws, we
}

// wordStart returns where the word holding data[s] starts: letters, digits
// and "_.-" before it, at most maxBack bytes back.
func wordStart(data []byte, s int) int {
	lo := max(0, s-maxBack)
	for s > lo && wordByte(data[s-1]) {
		s--
	}
	return s
}

// assigned reports whether the keyword ending at data[e] ends a word or a
// part of one ("db_password", "password_file", not "passwords"), the rest of
// the word is not denied by the rule's denySuffix, and the word is followed
// by an assignment: an optional closing quote, blanks, then ':' or '='.
func assigned(r *compiledRule, data []byte, e int) bool {
	hi := min(len(data), e+maxBack)
	if e < hi && wordByte(data[e]) && data[e] != '_' && data[e] != '.' && data[e] != '-' {
		return false
	}
	s, i := e, e
	for i < hi && wordByte(data[i]) {
		i++
	}
	we := i
	if i < hi && (data[i] == '"' || data[i] == '\'') {
		i++
	}
	for i < hi && (data[i] == ' ' || data[i] == '\t') {
		i++
	}
	if i >= hi || (data[i] != ':' && data[i] != '=') {
		return false
	}
	return we == s || !deniedSuffix(r.denySuf, data[s:we])
}

// suffixSet is a set of lower-case words that a string may end with,
// indexed by length so that a test costs one map lookup per length.
type suffixSet struct {
	lens  []int
	words map[string]bool
}

func newSuffixSet(ws [][]byte) suffixSet {
	ss := suffixSet{words: map[string]bool{}}
	seen := map[int]bool{}
	for _, w := range ws {
		ss.words[string(w)] = true
		if !seen[len(w)] {
			seen[len(w)] = true
			ss.lens = append(ss.lens, len(w))
		}
	}
	slices.Sort(ss.lens)
	return ss
}

// deniedSuffix reports whether rest ends, in any case, with one of the
// set's words (rest is the part of a word after, or before, its keyword).
func deniedSuffix(ss suffixSet, rest []byte) bool {
	if len(ss.lens) == 0 {
		return false
	}
	var buf [64]byte
	if len(rest) > len(buf) {
		rest = rest[len(rest)-len(buf):]
	}
	low := buf[:len(rest)]
	for i, c := range rest {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		low[i] = c
	}
	for _, n := range ss.lens {
		if n > len(low) {
			break
		}
		if ss.words[string(low[len(low)-n:])] {
			return true
		}
	}
	return false
}

func wordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
}

func printableByte(c byte, newlines bool) bool {
	return (c >= 0x20 && c < 0x7f) || c == '\t' || (newlines && (c == '\n' || c == '\r'))
}

// run applies rule ri to one window and records accepted matches.
func (d *detector) run(ri int, data []byte, w window) {
	r := d.rs.rules[ri]
	sub := data[w.start:w.end]
	var locs [][]int
	if r.WordStart { // anchored: one match at most
		if loc := r.re.FindSubmatchIndex(sub); loc != nil {
			locs = [][]int{loc}
		}
	} else {
		locs = r.re.FindAllSubmatchIndex(sub, -1)
	}
	for _, loc := range locs {
		ss, se := -1, -1
		for g := r.SecretGroup; 2*g+1 < len(loc); g++ {
			if loc[2*g] >= 0 && loc[2*g+1] > loc[2*g] {
				ss, se = loc[2*g], loc[2*g+1]
				break
			}
		}
		if ss < 0 {
			continue
		}
		d.consider(r, data, w.start+ss, w.start+se, w.start+loc[0], w.start+loc[1])
	}
}

// consider checks the secret data[start:end] of a match spanning
// data[mstart:mend] and records it if it passes.
func (d *detector) consider(r *compiledRule, data []byte, start, end, mstart, mend int) {
	v := data[start:end]
	if r.Entropy > 0 && entropy(v) < r.Entropy {
		return // cheapest check first
	}
	if !r.Multiline && bytes.Count(v, []byte(" ")) >= 2 {
		return // prose: "your api key", a message
	}
	if r.value != nil && !r.value.Match(v) {
		return
	}
	if r.lineCtx != nil && !r.lineCtx.Match(data[lineStart(data, mstart):mstart]) {
		return
	}
	if !d.rs.accept(r, v) {
		return
	}
	m := match{rule: r, start: start, end: end, mstart: mstart, mend: mend}
	if r.checksum != nil {
		m.badChecksum = !r.checksum(v)
	}
	d.matches = append(d.matches, m)
}

// accept applies a rule's checks and the global allow list to a secret.
func (rs *Rules) accept(r *compiledRule, v []byte) bool {
	if r.denyValue.Match(v) {
		return false
	}
	for _, a := range r.allow {
		if a.Match(v) {
			return false
		}
	}
	if len(v) <= maxAllowLen && rs.placeholder(v) {
		return false
	}
	return r.validate == nil || r.validate(rs, v)
}

// placeholder reports documentation examples and placeholders.
func (rs *Rules) placeholder(v []byte) bool {
	if trivial(v) || sequential(v) {
		return true
	}
	return rs.allow.Match(v)
}

// resolveOverlaps keeps, of matches whose secrets overlap, the one of the
// highest rule priority (then the longest).
func resolveOverlaps(ms []match) []match {
	if len(ms) < 2 {
		return ms
	}
	slices.SortFunc(ms, func(a, b match) int {
		if a.start != b.start {
			return a.start - b.start
		}
		return b.end - a.end
	})
	out := ms[:1]
	for _, m := range ms[1:] {
		last := &out[len(out)-1]
		if m.start >= last.end {
			out = append(out, m)
			continue
		}
		if m.rule.Priority > last.rule.Priority ||
			(m.rule.Priority == last.rule.Priority && m.end-m.start > last.end-last.start) {
			*last = m
		}
	}
	return out
}

// letterAndDigit reports a value with both a letter and a digit: in a
// binary's string table, identifiers run into each other ("Token:Topic"),
// while real credentials nearly always mix the two.
func letterAndDigit(v []byte) bool {
	var l, d bool
	for _, c := range v {
		switch {
		case c >= '0' && c <= '9':
			d = true
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
			l = true
		}
	}
	return l && d
}

// lineStart returns where the line holding data[i] starts, at most maxBack
// bytes before i.
func lineStart(data []byte, i int) int {
	lo := max(0, i-maxBack)
	if j := bytes.LastIndexByte(data[lo:i], '\n'); j >= 0 {
		return lo + j + 1
	}
	return lo
}
