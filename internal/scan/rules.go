package scan

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"

	"go.yaml.in/yaml/v3"
)

//go:embed rules.yaml
var builtinRules []byte

// ErrRules is returned (wrapped) for a rules file that cannot be used.
var ErrRules = errors.New("invalid rules")

// Rule is one detection rule as written in a rules file. See docs/scan.md.
type Rule struct {
	ID          string   `yaml:"id"`
	Description string   `yaml:"description"`
	Severity    string   `yaml:"severity"`
	Keywords    []string `yaml:"keywords"`      // any of these must occur before the regex runs
	CaseSens    bool     `yaml:"caseSensitive"` // keywords match case-sensitively
	Regex       string   `yaml:"regex"`
	SecretGroup int      `yaml:"secretGroup"` // first non-empty group at or after this index is the secret
	Entropy     float64  `yaml:"entropy"`     // minimum Shannon entropy (bits per byte) of the secret
	Multiline   bool     `yaml:"multiline"`   // the match may span lines (PEM blocks, JSON)
	WordStart   bool     `yaml:"wordStart"`   // the match starts where the word holding the keyword starts
	Assign      bool     `yaml:"assign"`      // the keyword ends a word or a part of it, and the word is followed by ':' or '='
	WordEnd     bool     `yaml:"wordEnd"`     // with assign: the keyword ends the word (api_key, not key_id)
	Value       string   `yaml:"value"`       // with assign and no regex: the assigned value must match this
	MinLen      int      `yaml:"minLength"`   // with assign and no regex: shortest value (default 6)
	MaxLen      int      `yaml:"maxLength"`   // with assign and no regex: longest value (default 1024)
	// QuotedInCode: with assign and no regex, in program source (.go, .js,
	// .py, ...) only quoted values count: unquoted ones are expressions.
	QuotedInCode bool     `yaml:"quotedInCode"`
	Path         string   `yaml:"path"`         // only files whose path matches this regex
	LineContext  string   `yaml:"lineContext"`  // the line before the match must match this regex (a connection string's host=)
	Allow        []string `yaml:"allow"`        // secrets matching any of these are not findings
	DenySuffix   []string `yaml:"denySuffixes"` // with assign: a word whose rest after the keyword ends with one of these (any case) is skipped: password_file
	DenyPrefix   []string `yaml:"denyPrefixes"` // with assign: a word whose part before the keyword ends with one of these (any case) is skipped: public_key
	DenyValue    string   `yaml:"denyValue"`    // secrets matching this are not findings
	Validate     string   `yaml:"validate"`     // built-in check: jwt, pem-body, docker-auth, basic-auth
	Checksum     string   `yaml:"checksum"`     // built-in checksum of the token format: github (also npm)
	Signal       string   `yaml:"signal"`       // "high": context (test paths, docs) never makes it low confidence
	Import       string   `yaml:"import"`       // what --import stores: secret (default), match (a whole PEM block) or file
	Format       string   `yaml:"format"`       // a built-in structural detector instead of a regex: keystore
	Priority     int      `yaml:"priority"`     // of two overlapping matches the higher priority wins
}

// rulesFile is the shape of rules.yaml and of files given with --rules.
type rulesFile struct {
	Version int      `yaml:"version"`
	Allow   []string `yaml:"allow"`
	Rules   []Rule   `yaml:"rules"`
}

// compiledRule is a Rule ready to run.
type compiledRule struct {
	Rule
	sev        Severity
	re         *regexp.Regexp
	value      *regexp.Regexp // assign rules without a regex
	path       *regexp.Regexp
	lineCtx    *regexp.Regexp
	allow      []*regexp.Regexp
	denySuf    suffixSet
	denyPre    suffixSet
	denyValue  anyOf
	validate   func(*Rules, []byte) bool
	checksum   func([]byte) bool
	highSignal bool
	format     formatDetector
	coreLen    int // length of the suffix all keywords share ("key" of _key, akey, ...)
}

// parsed reports an assign rule whose value is found by the built-in
// assignment parser rather than by a regex.
func (r *compiledRule) parsed() bool { return r.Assign && r.Regex == "" }

// kwRule ties a prefilter keyword to a rule; exact is set for case-sensitive rules.
type kwRule struct {
	rule  int
	exact []byte
}

// Rules is a compiled, immutable rule set with its keyword prefilter. It is
// safe for concurrent use.
type Rules struct {
	rules    []*compiledRule
	allow    anyOf // the global allow list
	pf       *prefilter
	byKW     [][]kwRule // keyword index -> rules using it
	pathOnly []int      // rules without keywords (run on every file their Path matches)
	formats  []int      // structural detectors (format:), run on every file
}

// Len reports the number of rules.
func (rs *Rules) Len() int { return len(rs.rules) }

// IDs lists the rule IDs in order.
func (rs *Rules) IDs() []string {
	ids := make([]string, len(rs.rules))
	for i, r := range rs.rules {
		ids[i] = r.ID
	}
	return ids
}

// Describe returns the description and severity of a rule.
func (rs *Rules) Describe(id string) (string, Severity, bool) {
	for _, r := range rs.rules {
		if r.ID == id {
			return r.Description, r.sev, true
		}
	}
	return "", 0, false
}

// LoadRules compiles the built-in rules followed by each extra rules file (YAML).
// A rule in an extra file replaces the built-in rule of the same ID; its allow
// list is added to the global one.
func LoadRules(extra ...[]byte) (*Rules, error) {
	var base rulesFile
	if err := decodeRules(builtinRules, &base); err != nil {
		return nil, fmt.Errorf("built-in rules: %w", err)
	}
	for i, src := range extra {
		var f rulesFile
		if err := decodeRules(src, &f); err != nil {
			return nil, fmt.Errorf("rules file %d: %w", i+1, err)
		}
		base.Allow = append(base.Allow, f.Allow...)
		for _, r := range f.Rules {
			replaced := false
			for j := range base.Rules {
				if base.Rules[j].ID == r.ID {
					base.Rules[j], replaced = r, true
					break
				}
			}
			if !replaced {
				base.Rules = append(base.Rules, r)
			}
		}
	}
	return compileRules(base)
}

func decodeRules(src []byte, f *rulesFile) error {
	dec := yaml.NewDecoder(strings.NewReader(string(src)))
	dec.KnownFields(true)
	if err := dec.Decode(f); err != nil {
		return fmt.Errorf("%w: %w", ErrRules, err)
	}
	if f.Version != 0 && f.Version != 1 {
		return fmt.Errorf("%w: unsupported version %d", ErrRules, f.Version)
	}
	return nil
}

func compileRules(f rulesFile) (*Rules, error) {
	rs := &Rules{}
	for _, a := range f.Allow {
		if _, err := regexp.Compile(a); err != nil {
			return nil, fmt.Errorf("%w: allow %q: %w", ErrRules, a, err)
		}
	}
	allow, err := compileAnyOf(f.Allow...)
	if err != nil {
		return nil, fmt.Errorf("%w: allow: %w", ErrRules, err)
	}
	rs.allow = allow
	kwIndex := map[string]int{}
	var kws []string
	seen := map[string]bool{}
	for _, r := range f.Rules {
		cr, err := compileRule(r)
		if err != nil {
			return nil, err
		}
		if seen[r.ID] {
			return nil, fmt.Errorf("%w: duplicate rule id %q", ErrRules, r.ID)
		}
		seen[r.ID] = true
		idx := len(rs.rules)
		rs.rules = append(rs.rules, cr)
		if cr.format != nil {
			rs.formats = append(rs.formats, idx)
			continue
		}
		if len(r.Keywords) == 0 {
			rs.pathOnly = append(rs.pathOnly, idx)
			continue
		}
		for _, k := range r.Keywords {
			lk := strings.ToLower(k)
			ki, ok := kwIndex[lk]
			if !ok {
				ki = len(kws)
				kwIndex[lk] = ki
				kws = append(kws, lk)
				rs.byKW = append(rs.byKW, nil)
			}
			kr := kwRule{rule: idx}
			if r.CaseSens {
				kr.exact = []byte(k)
			}
			rs.byKW[ki] = append(rs.byKW[ki], kr)
		}
	}
	pf, err := newPrefilter(kws)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRules, err)
	}
	rs.pf = pf
	return rs, nil
}

func compileRule(r Rule) (*compiledRule, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: rule %q: %s", ErrRules, r.ID, fmt.Sprintf(format, a...))
	}
	if r.ID == "" {
		return nil, fmt.Errorf("%w: rule without id", ErrRules)
	}
	cr := &compiledRule{Rule: r}
	sev, err := ParseSeverity(r.Severity)
	if err != nil {
		return nil, bad("%v", err)
	}
	cr.sev = sev
	switch r.Signal {
	case "", "normal":
	case "high":
		cr.highSignal = true
	default:
		return nil, bad("signal %q: want high or normal", r.Signal)
	}
	switch r.Import {
	case "", "secret", "match", "file":
	default:
		return nil, bad("import %q: want secret, match or file", r.Import)
	}
	if r.Format != "" {
		f, ok := formats[r.Format]
		if !ok {
			return nil, bad("unknown format %q", r.Format)
		}
		if r.Regex != "" || len(r.Keywords) > 0 || r.Assign {
			return nil, bad("format rules take no regex, keywords or assign")
		}
		cr.format = f
		return cr, nil
	}
	switch {
	case r.Regex == "" && !r.Assign:
		return nil, bad("no regex")
	case len(r.Keywords) == 0 && r.Path == "":
		return nil, bad("needs keywords or a path (a rule that runs on every byte would be too slow)")
	case r.Assign && len(r.Keywords) == 0:
		return nil, bad("assign needs keywords")
	case (r.Value != "" || r.MinLen != 0 || r.MaxLen != 0) && (!r.Assign || r.Regex != ""):
		return nil, bad("value, minLength and maxLength need assign without a regex")
	case (len(r.DenySuffix) > 0 || len(r.DenyPrefix) > 0 || r.WordEnd) && !r.Assign:
		return nil, bad("denySuffixes, denyPrefixes and wordEnd need assign")
	case r.MinLen < 0 || r.MinLen > maxFwd || r.MaxLen < 0 || r.MaxLen > maxFwd:
		return nil, bad("minLength and maxLength must be in 0..%d", maxFwd)
	}
	if r.Regex != "" {
		src := r.Regex
		if r.WordStart {
			src = `\A(?:` + src + `)`
		}
		if cr.re, err = regexp.Compile(src); err != nil {
			return nil, bad("regex: %v", err)
		}
		if r.SecretGroup > cr.re.NumSubexp() {
			return nil, bad("secretGroup beyond the regex's %d groups", cr.re.NumSubexp())
		}
	}
	for _, k := range r.Keywords {
		if k == "" {
			return nil, bad("empty keyword")
		}
	}
	opt := func(src, what string) (*regexp.Regexp, error) {
		if src == "" {
			return nil, nil
		}
		re, err := regexp.Compile(src)
		if err != nil {
			return nil, bad("%s: %v", what, err)
		}
		return re, nil
	}
	if cr.path, err = opt(r.Path, "path"); err != nil {
		return nil, err
	}
	if cr.value, err = opt(r.Value, "value"); err != nil {
		return nil, err
	}
	if cr.lineCtx, err = opt(r.LineContext, "lineContext"); err != nil {
		return nil, err
	}
	if cr.parsed() && cr.MinLen == 0 {
		cr.MinLen = 6
	}
	if cr.parsed() && cr.MaxLen == 0 {
		cr.MaxLen = maxFwd
	}
	words := func(ws []string, what string) ([][]byte, error) {
		var out [][]byte
		for _, w := range ws {
			if w == "" {
				return nil, bad("empty %s entry", what)
			}
			out = append(out, []byte(strings.ToLower(w)))
		}
		return out, nil
	}
	suf, err := words(r.DenySuffix, "denySuffixes")
	if err != nil {
		return nil, err
	}
	pre, err := words(r.DenyPrefix, "denyPrefixes")
	if err != nil {
		return nil, err
	}
	cr.denySuf, cr.denyPre = newSuffixSet(suf), newSuffixSet(pre)
	cr.coreLen = commonSuffix(r.Keywords)
	if r.DenyValue != "" {
		if cr.denyValue, err = compileAnyOf(r.DenyValue); err != nil {
			return nil, bad("denyValue: %v", err)
		}
	}
	for _, a := range r.Allow {
		re, err := opt(a, "allow")
		if err != nil {
			return nil, err
		}
		cr.allow = append(cr.allow, re)
	}
	if r.Validate != "" {
		v, ok := validators[r.Validate]
		if !ok {
			return nil, bad("unknown validate %q", r.Validate)
		}
		cr.validate = v
	}
	if r.Checksum != "" {
		c, ok := checksums[r.Checksum]
		if !ok {
			return nil, bad("unknown checksum %q", r.Checksum)
		}
		cr.checksum = c
	}
	return cr, nil
}

// anyOf matches a value against a list of patterns. Alternatives that are
// plain words ("example", "(?i)^(?:password|secret)$", "\\$\\{") are
// compared as bytes, on a lower-cased copy where the case is ignored; the
// others run as regexps, each alternative on its own (Go runs an anchored
// regexp in one pass, but retries an alternation at every position).
type anyOf struct {
	lits []literal
	res  []*regexp.Regexp
}

// literal is an alternative without metacharacters.
type literal struct {
	s          []byte // lower-case when fold
	fold       bool
	start, end bool // anchored at the start, at the end
}

// maxFold is the longest value folded for literal comparison; longer
// values are compared by regexp only.
const maxFold = 512

func (a anyOf) Match(b []byte) bool {
	if len(a.lits) > 0 {
		var buf [maxFold]byte
		low := buf[:0]
		if len(b) <= maxFold {
			low = buf[:len(b)]
			for i, c := range b {
				low[i] = lowerASCII(c)
			}
		}
		for _, l := range a.lits {
			v := b
			if l.fold {
				if len(b) > maxFold {
					continue
				}
				v = low
			}
			switch {
			case l.start && l.end:
				if bytes.Equal(v, l.s) {
					return true
				}
			case l.start:
				if bytes.HasPrefix(v, l.s) {
					return true
				}
			case l.end:
				if bytes.HasSuffix(v, l.s) {
					return true
				}
			default:
				if bytes.Contains(v, l.s) {
					return true
				}
			}
		}
	}
	for _, re := range a.res {
		if re.Match(b) {
			return true
		}
	}
	return false
}

// compileAnyOf compiles patterns, each possibly an alternation, splitting
// them into literals and regexps.
func compileAnyOf(srcs ...string) (anyOf, error) {
	var out anyOf
	for _, src := range srcs {
		re, err := syntax.Parse(src, syntax.Perl)
		if err != nil {
			return out, err
		}
		subs := []*syntax.Regexp{re}
		if re.Op == syntax.OpAlternate {
			subs = re.Sub
		}
		for _, sub := range subs {
			if lits, ok := literals(sub); ok {
				out.lits = append(out.lits, lits...)
				continue
			}
			c, err := regexp.Compile(sub.String())
			if err != nil {
				return out, err
			}
			out.res = append(out.res, c)
		}
	}
	return out, nil
}

// literals turns an alternative that is a literal, optionally anchored by
// ^ and $, or ^(?:lit|lit|...)$, into byte comparisons.
func literals(re *syntax.Regexp) ([]literal, bool) {
	parts := []*syntax.Regexp{re}
	if re.Op == syntax.OpConcat {
		parts = re.Sub
	}
	var start, end bool
	if len(parts) > 0 && parts[0].Op == syntax.OpBeginText {
		start, parts = true, parts[1:]
	}
	if len(parts) > 0 && parts[len(parts)-1].Op == syntax.OpEndText {
		end, parts = true, parts[:len(parts)-1]
	}
	if len(parts) != 1 {
		return nil, false
	}
	core := parts[0]
	for core.Op == syntax.OpCapture {
		core = core.Sub[0]
	}
	alts := []*syntax.Regexp{core}
	if core.Op == syntax.OpAlternate {
		alts = core.Sub
	}
	var out []literal
	for _, a := range alts {
		if a.Op != syntax.OpLiteral {
			return nil, false
		}
		fold := a.Flags&syntax.FoldCase != 0
		b := []byte(string(a.Rune))
		for _, r := range a.Rune {
			if r >= 0x80 {
				return nil, false
			}
		}
		if fold {
			for i, c := range b {
				b[i] = lowerASCII(c)
			}
		}
		out = append(out, literal{s: b, fold: fold, start: start, end: end})
	}
	return out, len(out) > 0
}

// commonSuffix is the length of the longest suffix (any case) shared by all
// keywords.
func commonSuffix(kws []string) int {
	if len(kws) < 2 {
		return 0
	}
	n := 0
	for {
		var c byte
		for i, k := range kws {
			if n >= len(k) {
				return n
			}
			b := lowerASCII(k[len(k)-1-n])
			if i == 0 {
				c = b
			} else if b != c {
				return n
			}
		}
		n++
	}
}
