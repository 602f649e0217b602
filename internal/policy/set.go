package policy

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// Set is an immutable, compiled collection of bindings with unique names.
// It is safe for concurrent use. The zero Set is not usable: call NewSet.
type Set struct {
	byName *shardMap[*compiled]
	eq     *shardMap[[]*compiled] // "key\x00value" -> bindings that require key=value (or key in (..., value, ...))
	exists *shardMap[[]*compiled] // "key" -> bindings that require key to exist, and have no equality requirement
	rest   []*compiled            // bindings with neither: evaluated for every container
	n      int
	// imageKeys counts, per image label key (ImageLabelPrefix cut off), the
	// bindings indexed under it. Match looks up only a container's image
	// labels with such a key, or none at all while the map is empty. Never
	// modified once a Set holds it.
	imageKeys map[string]int
}

// Index kinds: which part of the Set a compiled binding is reachable from.
const (
	inRest = iota
	inEq
	inExists
)

// NewSet compiles bindings into a Set. Each binding is validated (and
// normalized) again, so an invalid binding or a repeated name is an error
// wrapping ErrInvalid.
func NewSet(bs []Binding) (*Set, error) {
	cs := make([]*compiled, len(bs))
	seen := make(map[string]struct{}, len(bs))
	popular := make(map[string]int) // how many bindings could be indexed under each pair
	for i, b := range bs {
		c, err := compile(b)
		if err != nil {
			return nil, err
		}
		if _, dup := seen[c.Name]; dup {
			return nil, fmt.Errorf("%w %q: name used by two bindings", ErrInvalid, c.Name)
		}
		seen[c.Name] = struct{}{}
		cs[i] = c
		for _, r := range c.reqs {
			if isEq(r.Operator()) {
				for _, v := range r.ValuesUnsorted() {
					popular[eqKey(r.Key(), v)]++
				}
			}
		}
	}
	ed := newEditor(nil)
	for _, c := range cs {
		ed.add(c, func(k string) int { return popular[k] })
	}
	return ed.done(), nil
}

// Len returns the number of bindings in s.
func (s *Set) Len() int { return s.n }

// Get returns the binding named name, normalized.
func (s *Set) Get(name string) (Binding, bool) {
	c, ok := s.byName.get(name)
	if !ok {
		return Binding{}, false
	}
	return c.Binding, true
}

// Bindings returns every binding in s, sorted by name.
func (s *Set) Bindings() []Binding {
	out := make([]Binding, 0, s.n)
	for _, m := range s.byName.m {
		for _, c := range m {
			out = append(out, c.Binding)
		}
	}
	slices.SortFunc(out, func(a, b Binding) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// With returns a copy of s in which b (normalized) is added, or replaces the
// binding of the same name. s itself is unchanged. The cost is about
// Len()/64 map entries plus the index lists b touches, not a recompilation.
func (s *Set) With(b Binding) (*Set, error) {
	c, err := compile(b)
	if err != nil {
		return nil, err
	}
	ed := newEditor(s)
	if old, ok := s.byName.get(c.Name); ok {
		ed.remove(old)
	}
	ed.add(c, func(k string) int { v, _ := ed.eq.get(k); return len(v) })
	return ed.done(), nil
}

// Without returns a copy of s without the binding named name, or s itself
// if there is none.
func (s *Set) Without(name string) *Set {
	old, ok := s.byName.get(name)
	if !ok {
		return s
	}
	ed := newEditor(s)
	ed.remove(old)
	return ed.done()
}

// Match returns what the container t receives: one Grant per file, sorted
// by File. When two matching bindings want the same file, the one with the
// smaller Name wins and the other is left out (see Explain).
func (s *Set) Match(t Target) []Grant {
	granted, _ := s.match(t, false)
	return granted
}

// Explain is Match that also returns the grants left out because a binding
// with a smaller name wanted the same file, sorted by File then Binding.
func (s *Set) Explain(t Target) (granted, shadowed []Grant) {
	return s.match(t, true)
}

func (s *Set) match(t Target, keepShadowed bool) (granted, shadowed []Grant) {
	var (
		ref imageRef
		out []Grant
		buf [256]byte
	)
	ls := labels.Set(t.Labels)
	try := func(cs []*compiled) {
		for _, c := range cs {
			if c.matches(ls, t, &ref) {
				if out == nil {
					out = make([]Grant, 0, 2) // kept per container: most have one or two
				}
				out = append(out, c.grant())
			}
		}
	}
	for k, v := range t.Labels {
		if strings.HasPrefix(k, ImageLabelPrefix) {
			continue // a container label posing as an image label: no binding sees it
		}
		key := append(append(append(buf[:0], k...), 0), v...)
		try(s.eq.getBytes(key))
		try(s.exists.getBytes(key[:len(k)]))
	}
	tryImage := func(k, v string) {
		key := append(append(append(append(buf[:0], ImageLabelPrefix...), k...), 0), v...)
		try(s.eq.getBytes(key))
		try(s.exists.getBytes(key[:len(ImageLabelPrefix)+len(k)]))
	}
	if n := len(s.imageKeys); n > 0 && n < len(t.ImageLabels) {
		for k := range s.imageKeys { // images often carry many labels that no binding names
			if v, ok := t.ImageLabels[k]; ok {
				tryImage(k, v)
			}
		}
	} else if n > 0 {
		for k, v := range t.ImageLabels {
			tryImage(k, v)
		}
	}
	try(s.rest)
	if len(out) == 0 {
		return nil, nil
	}
	slices.SortFunc(out, func(a, b Grant) int {
		return cmp.Or(strings.Compare(a.File, b.File), strings.Compare(a.Binding, b.Binding))
	})
	kept := out[:1]
	for _, g := range out[1:] {
		if g.File == kept[len(kept)-1].File {
			if keepShadowed {
				shadowed = append(shadowed, g)
			}
			continue
		}
		kept = append(kept, g)
	}
	return kept, shadowed
}

// matches evaluates c for t, cheapest and most selective parts first: the
// container's labels, its image's labels, its image, and last the host's
// labels, which most bindings that get this far do not restrict.
func (c *compiled) matches(ls labels.Set, t Target, ref *imageRef) bool {
	for i := range c.own {
		if !c.own[i].Matches(ls) {
			return false
		}
	}
	if len(c.imageReqs) > 0 {
		ils := labels.Set(t.ImageLabels)
		for i := range c.imageReqs {
			if !c.imageReqs[i].Matches(ils) {
				return false
			}
		}
	}
	if !c.image.IsZero() && !c.image.match(ref, t.Image, t.ImageDigest) {
		return false
	}
	if len(c.hosts) > 0 {
		hls := labels.Set(t.HostLabels)
		for i := range c.hosts {
			if !c.hosts[i].Matches(hls) {
				return false
			}
		}
	}
	return true
}

func isEq(op selection.Operator) bool {
	return op == selection.Equals || op == selection.DoubleEquals || op == selection.In
}

func eqKey(k, v string) string { return k + "\x00" + v }

// editor builds a new Set from an old one, copying only what it changes.
type editor struct {
	byName    *shardEdit[*compiled]
	eq        *shardEdit[[]*compiled]
	exists    *shardEdit[[]*compiled]
	rest      []*compiled
	n         int
	imageKeys map[string]int
	ownKeys   bool // imageKeys is this editor's copy
	fresh     bool // lists may be appended to in place (NewSet)
}

func newEditor(s *Set) *editor {
	if s == nil {
		return &editor{
			byName: freshShards[*compiled](),
			eq:     freshShards[[]*compiled](),
			exists: freshShards[[]*compiled](),
			fresh:  true,
		}
	}
	return &editor{
		byName:    editShards(s.byName),
		eq:        editShards(s.eq),
		exists:    editShards(s.exists),
		rest:      slices.Clip(s.rest),
		n:         s.n,
		imageKeys: s.imageKeys,
	}
}

func (e *editor) done() *Set {
	return &Set{byName: e.byName.done(), eq: e.eq.done(), exists: e.exists.done(), rest: e.rest, n: e.n, imageKeys: e.imageKeys}
}

// add indexes c under its least popular equality requirement, else under
// an existence requirement, else in rest, and records where in c. Keys
// under ImageLabelPrefix are indexed like any other: Match looks them up
// from the container's image labels, never from its own.
func (e *editor) add(c *compiled, popularity func(eqKey string) int) {
	e.byName.set(c.Name, c)
	e.n++
	best, bestCost := -1, 0
	for i, r := range c.reqs {
		if !isEq(r.Operator()) {
			continue
		}
		cost := 0
		for _, v := range r.ValuesUnsorted() {
			cost += popularity(eqKey(r.Key(), v)) + 1
		}
		if best < 0 || cost < bestCost {
			best, bestCost = i, cost
		}
	}
	if best >= 0 {
		r := c.reqs[best]
		c.index = inEq
		e.markImage(c, r.Key())
		for _, v := range r.ValuesUnsorted() {
			k := eqKey(r.Key(), v)
			c.keys = append(c.keys, k)
			old, _ := e.eq.get(k)
			e.eq.set(k, e.appendTo(old, c))
		}
		return
	}
	for _, r := range c.reqs {
		if r.Operator() == selection.Exists {
			c.index, c.keys = inExists, []string{r.Key()}
			e.markImage(c, r.Key())
			old, _ := e.exists.get(r.Key())
			e.exists.set(r.Key(), e.appendTo(old, c))
			return
		}
	}
	c.index = inRest
	e.rest = e.appendTo(e.rest, c)
}

// markImage records that c is indexed under key, if key is an image label's.
func (e *editor) markImage(c *compiled, key string) {
	if k, ok := strings.CutPrefix(key, ImageLabelPrefix); ok {
		c.imageKey = k
		e.countImageKey(k, +1)
	}
}

// countImageKey adds d to the bindings indexed under image label key k,
// copying the map the first time (older Sets share it).
func (e *editor) countImageKey(k string, d int) {
	if !e.ownKeys {
		e.imageKeys = maps.Clone(e.imageKeys)
		if e.imageKeys == nil {
			e.imageKeys = map[string]int{}
		}
		e.ownKeys = true
	}
	if e.imageKeys[k] += d; e.imageKeys[k] <= 0 {
		delete(e.imageKeys, k)
	}
}

func (e *editor) appendTo(list []*compiled, c *compiled) []*compiled {
	if !e.fresh {
		list = slices.Clip(list) // shared with older Sets: copy, never write in place
	}
	return append(list, c)
}

// remove takes c out of the index it is in.
func (e *editor) remove(c *compiled) {
	e.byName.del(c.Name)
	e.n--
	if c.imageKey != "" {
		e.countImageKey(c.imageKey, -1)
	}
	idx := e.eq
	switch c.index {
	case inRest:
		e.rest = without(e.rest, c)
		return
	case inExists:
		idx = e.exists
	}
	for _, k := range c.keys {
		list, _ := idx.get(k)
		if list = without(list, c); len(list) == 0 {
			idx.del(k)
		} else {
			idx.set(k, list)
		}
	}
}

// without returns a new list holding list's elements but c.
func without(list []*compiled, c *compiled) []*compiled {
	out := make([]*compiled, 0, len(list))
	for _, x := range list {
		if x != c {
			out = append(out, x)
		}
	}
	return out
}
