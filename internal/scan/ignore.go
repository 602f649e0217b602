package scan

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// ErrIgnoreFile is returned (wrapped) for a malformed .cofferignore.
var ErrIgnoreFile = errors.New("invalid ignore file")

// Ignore is a parsed .cofferignore: fingerprints, "rule:ID" and "path:GLOB"
// entries (one per line, '#' starts a comment). A nil *Ignore ignores nothing.
type Ignore struct {
	fingerprints map[string]bool
	rules        map[string]bool
	paths        []string
}

// ParseIgnore reads an ignore file.
func ParseIgnore(rd io.Reader) (*Ignore, error) {
	ig := &Ignore{fingerprints: map[string]bool{}, rules: map[string]bool{}}
	sc := bufio.NewScanner(rd)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "rule:"):
			ig.rules[strings.TrimSpace(line[len("rule:"):])] = true
		case strings.HasPrefix(line, "path:"):
			g := strings.TrimPrefix(strings.TrimSpace(line[len("path:"):]), "/")
			if _, err := path.Match(g, ""); err != nil {
				return nil, fmt.Errorf("%w: line %d: %w", ErrIgnoreFile, n, err)
			}
			ig.paths = append(ig.paths, g)
		case isFingerprint(line):
			ig.fingerprints[strings.ToLower(line)] = true
		default:
			return nil, fmt.Errorf("%w: line %d: want a 16-digit hex fingerprint, rule:ID or path:GLOB", ErrIgnoreFile, n)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIgnoreFile, err)
	}
	return ig, nil
}

// LoadIgnore reads the ignore file at name; a missing file ignores nothing.
func LoadIgnore(name string) (*Ignore, error) {
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ig, err := ParseIgnore(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return ig, nil
}

// Merge adds o's entries to ig and returns ig (or o if ig is nil).
func (ig *Ignore) Merge(o *Ignore) *Ignore {
	if ig == nil {
		return o
	}
	if o == nil {
		return ig
	}
	for k := range o.fingerprints {
		ig.fingerprints[k] = true
	}
	for k := range o.rules {
		ig.rules[k] = true
	}
	ig.paths = append(ig.paths, o.paths...)
	return ig
}

// Match reports whether f is suppressed.
func (ig *Ignore) Match(f *Finding) bool {
	if ig == nil {
		return false
	}
	if ig.fingerprints[f.Fingerprint] || ig.rules[f.RuleID] {
		return true
	}
	for _, g := range ig.paths {
		// A pattern matches the path or any directory (or archive) above it.
		for p := f.Path; p != "" && p != "."; {
			if ok, _ := path.Match(g, p); ok {
				return true
			}
			i := strings.LastIndexAny(p, "/!")
			if i < 0 {
				break
			}
			p = p[:i]
		}
	}
	return false
}

func isFingerprint(s string) bool {
	if len(s) != 16 {
		return false
	}
	for _, c := range strings.ToLower(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
