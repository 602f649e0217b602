package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// MaxSelectorLen is the longest selector accepted, in bytes.
const MaxSelectorLen = 4096

// ParseSelector parses a Kubernetes label selector as a binding uses it:
// at least one requirement, no '<' or '>' operators. The returned selector's
// String is the canonical form that Normalize stores. Errors wrap ErrInvalid.
func ParseSelector(s string) (labels.Selector, error) {
	reqs, canon, err := parseSelector(s)
	if err != nil {
		return nil, fmt.Errorf("%w: selector %q: %w", ErrInvalid, s, err)
	}
	return canonicalSelector{labels.NewSelector().Add(reqs...), canon}, nil
}

var errEmptySelector = errors.New("no requirement: an empty selector would match every container")

// parseSelector parses s and returns its requirements in canonical order
// and its canonical string. The error carries only the reason.
func parseSelector(s string) (labels.Requirements, string, error) {
	if len(s) > MaxSelectorLen {
		return nil, "", fmt.Errorf("longer than %d bytes", MaxSelectorLen)
	}
	parsed, err := labels.ParseToRequirements(s)
	if err != nil {
		return nil, "", err
	}
	if len(parsed) == 0 {
		return nil, "", errEmptySelector
	}
	reqs := make(labels.Requirements, 0, len(parsed))
	for _, r := range parsed {
		c, err := canonicalRequirement(r)
		if err != nil {
			return nil, "", err
		}
		reqs = append(reqs, c)
	}
	// Order by key, then by text, and drop repeats: one spelling per meaning.
	type keyed struct {
		r    labels.Requirement
		text string
	}
	ks := make([]keyed, len(reqs))
	for i := range reqs {
		ks[i] = keyed{reqs[i], reqs[i].String()}
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		if c := strings.Compare(a.r.Key(), b.r.Key()); c != 0 {
			return c
		}
		return strings.Compare(a.text, b.text)
	})
	ks = slices.CompactFunc(ks, func(a, b keyed) bool { return a.text == b.text })
	reqs = reqs[:0]
	texts := make([]string, 0, len(ks))
	for _, k := range ks {
		reqs = append(reqs, k.r)
		texts = append(texts, k.text)
	}
	return reqs, strings.Join(texts, ","), nil
}

// canonicalSelector is a selector whose String is the canonical form, even
// where the library would order requirements on one key differently.
type canonicalSelector struct {
	labels.Selector
	text string
}

func (s canonicalSelector) String() string { return s.text }

// canonicalRequirement rewrites equivalent spellings to one: "==" and
// "in (v)" become "=", "notin (v)" becomes "!=". It rejects '<' and '>'.
func canonicalRequirement(r labels.Requirement) (labels.Requirement, error) {
	op := r.Operator()
	vals := r.ValuesUnsorted()
	switch {
	case op == selection.GreaterThan || op == selection.LessThan:
		return r, fmt.Errorf("requirement %q: the operators '<' and '>' are not supported", r.String())
	case op == selection.DoubleEquals, op == selection.In && len(vals) == 1:
		op = selection.Equals
	case op == selection.NotIn && len(vals) == 1:
		op = selection.NotEquals
	default:
		return r, nil
	}
	c, err := labels.NewRequirement(r.Key(), op, vals)
	if err != nil { // cannot happen: r was valid with the same key and values
		return r, err
	}
	return *c, nil
}
