package policy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
)

func mustSet(t testing.TB, bs ...Binding) *Set {
	t.Helper()
	s, err := NewSet(bs)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func names(gs []Grant) []string {
	out := []string{}
	for _, g := range gs {
		out = append(out, g.Binding)
	}
	return out
}

func TestMatchGrants(t *testing.T) {
	s := mustSet(t,
		Binding{Name: "web-db", Secret: "payments/db", Selector: "app=web", Mode: 0o440, UID: 1000, GID: 1001},
		Binding{Name: "web-api", Secret: "payments/api-key", Selector: "app in (web,worker),env=prod"},
		Binding{Name: "tls", Secret: "certs/tls", Selector: "tier", File: "tls.pem"},
		Binding{Name: "nodebug", Secret: "ops/token", Selector: "!debug"},
		Binding{Name: "busybox-only", Secret: "bb", Selector: "app", Image: "busybox:1.*"},
		Binding{Name: "pinned", Secret: "pin", Selector: "app=web", Image: digestA},
	)
	tests := []struct {
		name string
		t    Target
		want []Grant
	}{
		{"web prod", Target{Labels: map[string]string{"app": "web", "env": "prod"}, Image: "nginx"}, []Grant{
			{Binding: "web-api", Secret: "payments/api-key", File: "api-key", Mode: 0o400},
			{Binding: "web-db", Secret: "payments/db", File: "db", Mode: 0o440, UID: 1000, GID: 1001},
			{Binding: "nodebug", Secret: "ops/token", File: "token", Mode: 0o400},
		}},
		{"web debug busybox pinned", Target{Labels: map[string]string{"app": "web", "debug": "1", "tier": "x"}, Image: "busybox:1.36", ImageDigest: digestA}, []Grant{
			{Binding: "busybox-only", Secret: "bb", File: "bb", Mode: 0o400},
			{Binding: "web-db", Secret: "payments/db", File: "db", Mode: 0o440, UID: 1000, GID: 1001},
			{Binding: "pinned", Secret: "pin", File: "pin", Mode: 0o400},
			{Binding: "tls", Secret: "certs/tls", File: "tls.pem", Mode: 0o400},
		}},
		{"debug only", Target{Labels: map[string]string{"debug": "true"}}, nil},
		{"no labels", Target{}, []Grant{{Binding: "nodebug", Secret: "ops/token", File: "token", Mode: 0o400}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := s.Match(tt.t)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestMatchFileConflicts(t *testing.T) {
	s := mustSet(t,
		Binding{Name: "b-second", Secret: "x/db", Selector: "app=web"},
		Binding{Name: "a-first", Secret: "y/db", Selector: "app=web"},
		Binding{Name: "c-third", Secret: "z/other", Selector: "app", File: "db"},
		Binding{Name: "d-own", Secret: "z/own", Selector: "app"},
	)
	tg := Target{Labels: map[string]string{"app": "web"}}
	for range 20 { // map order must not matter
		got, shadowed := s.Explain(tg)
		if w := []string{"a-first", "d-own"}; !slices.Equal(names(got), w) {
			t.Fatalf("granted %v, want %v", names(got), w)
		}
		if got[0].Secret != "y/db" || got[0].File != "db" {
			t.Fatalf("winner %+v", got[0])
		}
		if w := []string{"b-second", "c-third"}; !slices.Equal(names(shadowed), w) {
			t.Fatalf("shadowed %v, want %v", names(shadowed), w)
		}
		if m := s.Match(tg); !reflect.DeepEqual(m, got) {
			t.Fatalf("Match %v != Explain %v", m, got)
		}
	}
	// Once the winner stops matching, the next name wins.
	got := s.Match(Target{Labels: map[string]string{"app": "db"}})
	if w := []string{"c-third", "d-own"}; !slices.Equal(names(got), w) {
		t.Fatalf("granted %v, want %v", names(got), w)
	}
}

func TestNewSetErrors(t *testing.T) {
	_, err := NewSet([]Binding{
		{Name: "a", Secret: "s", Selector: "x"},
		{Name: "a", Secret: "t", Selector: "y"},
	})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `invalid binding "a": name used by two bindings`) {
		t.Errorf("duplicate: %v", err)
	}
	_, err = NewSet([]Binding{{Name: "a", Secret: "s", Selector: ""}})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "no requirement") {
		t.Errorf("empty selector: %v", err)
	}
	s := mustSet(t)
	if s.Len() != 0 || s.Match(Target{Labels: map[string]string{"a": "b"}}) != nil || len(s.Bindings()) != 0 {
		t.Error("empty set is not empty")
	}
	if _, err := s.With(Binding{Name: "a", Secret: "s", Selector: "a", Mode: 0o100}); !errors.Is(err, ErrInvalid) {
		t.Errorf("With invalid: %v", err)
	}
}

func TestWithWithout(t *testing.T) {
	s0 := mustSet(t,
		Binding{Name: "a", Secret: "s/a", Selector: "app=web"},
		Binding{Name: "b", Secret: "s/b", Selector: "tier"},
		Binding{Name: "c", Secret: "s/c", Selector: "!debug"},
	)
	web := Target{Labels: map[string]string{"app": "web", "tier": "1"}}
	before := s0.Match(web)

	s1, err := s0.With(Binding{Name: "d", Secret: "s/d", Selector: "app in (web,db)"})
	if err != nil {
		t.Fatal(err)
	}
	// Replace a: now it wants app=db; replace b: moves from exists index to rest.
	s2, err := s1.With(Binding{Name: "a", Secret: "s/a", Selector: "app=db"})
	if err != nil {
		t.Fatal(err)
	}
	s3, err := s2.With(Binding{Name: "b", Secret: "s/b", Selector: "tier notin (2)"})
	if err != nil {
		t.Fatal(err)
	}
	s4 := s3.Without("c").Without("nope")
	s5 := s4.Without("d").Without("a").Without("b")

	check := func(s *Set, n int, want ...string) {
		t.Helper()
		if s.Len() != n {
			t.Errorf("Len = %d, want %d", s.Len(), n)
		}
		if got := names(s.Match(web)); !slices.Equal(got, want) {
			t.Errorf("Match = %v, want %v", got, want)
		}
	}
	check(s0, 3, "a", "b", "c")
	check(s1, 4, "a", "b", "c", "d")
	check(s2, 4, "b", "c", "d")
	check(s3, 4, "b", "c", "d")
	check(s4, 3, "b", "d")
	check(s5, 0)
	if !reflect.DeepEqual(s0.Match(web), before) {
		t.Error("s0 changed under With")
	}
	if s4.Without("nope") != s4 {
		t.Error("Without of an unknown name should return the same Set")
	}
	if b, ok := s3.Get("b"); !ok || b.Selector != "tier!=2" {
		t.Errorf("Get(b) = %+v, %v", b, ok)
	}
	if b, ok := s0.Get("b"); !ok || b.Selector != "tier" {
		t.Errorf("s0.Get(b) = %+v, %v", b, ok)
	}
	if got := s3.Bindings(); len(got) != 4 || got[0].Name != "a" || got[3].Name != "d" || got[0].File != "a" {
		t.Errorf("Bindings = %+v", got)
	}
}

// randomWorld makes bindings and targets over a small label vocabulary so
// that matches and conflicts are frequent. Some selectors use image.label/
// keys (with an image pattern that names images), some bindings have a
// host selector.
func randomWorld(r *rand.Rand, nb int) []Binding {
	keys := []string{"app", "env", "tier", "team", "debug", ImageLabelPrefix + "app", ImageLabelPrefix + "vendor"}
	hostKeys := []string{"env", "zone", "debug"}
	vals := []string{"a", "b", "c", ""}
	randomReqs := func(keys []string) string {
		var reqs []string
		for range 1 + r.IntN(3) {
			k := keys[r.IntN(len(keys))]
			v := vals[r.IntN(len(vals))]
			switch r.IntN(6) {
			case 0:
				reqs = append(reqs, k+"="+v)
			case 1:
				reqs = append(reqs, k+"!="+v)
			case 2:
				reqs = append(reqs, fmt.Sprintf("%s in (%s,%s)", k, v, vals[r.IntN(len(vals))]))
			case 3:
				reqs = append(reqs, fmt.Sprintf("%s notin (%s)", k, v))
			case 4:
				reqs = append(reqs, k)
			case 5:
				reqs = append(reqs, "!"+k)
			}
		}
		return strings.Join(reqs, ",")
	}
	var bs []Binding
	for i := range nb {
		b := Binding{Name: fmt.Sprintf("b%03d", i), Secret: fmt.Sprintf("s/f%d", r.IntN(8)), Selector: randomReqs(keys)}
		if strings.Contains(b.Selector, ImageLabelPrefix) {
			b.Image = []string{"busybox", "ghcr.io/x/*:1*", digestA}[r.IntN(3)]
		} else if r.IntN(4) == 0 {
			b.Image = []string{"busybox", "**/app:1*", digestA}[r.IntN(3)]
		}
		if r.IntN(3) == 0 {
			b.Hosts = randomReqs(hostKeys)
		}
		bs = append(bs, b)
	}
	return bs
}

// randomTarget makes a container, sometimes with a label that poses as an
// image label.
func randomTarget(r *rand.Rand) Target {
	keys := []string{"app", "env", "tier", "team", "debug", "other", ImageLabelPrefix + "app"}
	vals := []string{"a", "b", "c", ""}
	some := func(keys []string) map[string]string {
		m := map[string]string{}
		for _, k := range keys {
			if r.IntN(2) == 0 {
				m[k] = vals[r.IntN(len(vals))]
			}
		}
		return m
	}
	t := Target{Labels: some(keys), ImageLabels: some([]string{"app", "vendor", "other"})}
	if r.IntN(4) > 0 {
		t.HostLabels = some([]string{"env", "zone", "debug"})
	}
	t.Image = []string{"busybox", "ghcr.io/x/app:1.2", "nginx"}[r.IntN(3)]
	if r.IntN(2) == 0 {
		t.ImageDigest = digestA
	}
	return t
}

// brute is the specification: every binding evaluated with the library's
// own selector, conflicts resolved by name.
type brute []bruteBinding

type bruteBinding struct {
	b     Binding
	sel   labels.Selector
	hosts labels.Selector // nil: any host
	img   ImagePattern
}

// selectorView is what a selector sees of t, by definition: the
// container's labels except those under ImageLabelPrefix, and the image's
// labels under that prefix.
func selectorView(t Target) labels.Set {
	v := labels.Set{}
	for k, val := range t.Labels {
		if !strings.HasPrefix(k, ImageLabelPrefix) {
			v[k] = val
		}
	}
	for k, val := range t.ImageLabels {
		v[ImageLabelPrefix+k] = val
	}
	return v
}

func (x bruteBinding) matches(tg Target) bool {
	var ref imageRef // image matching is tested on its own; here only the index is in question
	return x.sel.Matches(selectorView(tg)) && x.img.match(&ref, tg.Image, tg.ImageDigest) &&
		(x.hosts == nil || x.hosts.Matches(labels.Set(tg.HostLabels)))
}

func newBrute(t testing.TB, bs []Binding) brute {
	var out brute
	for _, b := range bs {
		if err := b.Normalize(); err != nil {
			t.Fatal(err)
		}
		sel, err := labels.Parse(b.Selector)
		if err != nil {
			t.Fatal(err)
		}
		x := bruteBinding{b: b, sel: sel}
		if b.Image != "" {
			x.img, _ = ParseImagePattern(b.Image)
		}
		if b.Hosts != "" {
			if x.hosts, err = labels.Parse(b.Hosts); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, x)
	}
	return out
}

func (br brute) match(tg Target) []Grant {
	byFile := map[string]Grant{}
	for _, x := range br {
		if !x.matches(tg) {
			continue
		}
		b := x.b
		g := Grant{Binding: b.Name, Secret: b.Secret, File: b.File, Mode: b.Mode, UID: b.UID, GID: b.GID}
		if old, ok := byFile[g.File]; !ok || g.Binding < old.Binding {
			byFile[g.File] = g
		}
	}
	var out []Grant
	for _, g := range byFile {
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b Grant) int { return strings.Compare(a.File, b.File) })
	return out
}

func TestMatchAgreesWithBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	bs := randomWorld(r, 300)
	s := mustSet(t, bs...)
	// The same set built one With at a time, with some removals.
	inc := mustSet(t)
	var err error
	for _, b := range bs {
		if inc, err = inc.With(b); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < len(bs); i += 7 {
		inc = inc.Without(bs[i].Name)
	}
	var kept []Binding
	for i, b := range bs {
		if i%7 != 0 {
			kept = append(kept, b)
		}
	}
	all, some := newBrute(t, bs), newBrute(t, kept)
	byName := map[string]Binding{}
	for _, b := range bs {
		byName[b.Name] = b
	}
	var onImage, onHosts int // grants the new kinds of requirement took part in
	for range 1000 {
		tg := randomTarget(r)
		got, want := s.Match(tg), all.match(tg)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("target %+v\nMatch %v\nbrute %v", tg, got, want)
		}
		for _, g := range got {
			if strings.Contains(byName[g.Binding].Selector, ImageLabelPrefix) {
				onImage++
			}
			if byName[g.Binding].Hosts != "" {
				onHosts++
			}
		}
		if got, want := inc.Match(tg), some.match(tg); !reflect.DeepEqual(got, want) {
			t.Fatalf("incremental: target %+v\nMatch %v\nbrute %v", tg, got, want)
		}
		// Each binding is evaluated once: none is both granted and shadowed,
		// or shadowed twice (a container label posing as an image label
		// must not reach an image-label binding a second time).
		granted, shadowed := s.Explain(tg)
		once := map[string]bool{}
		for _, g := range append(granted, shadowed...) {
			if once[g.Binding] {
				t.Fatalf("target %+v: binding %s evaluated twice: %v / %v", tg, g.Binding, granted, shadowed)
			}
			once[g.Binding] = true
		}
	}
	if onImage < 100 || onHosts < 100 {
		t.Fatalf("the random world exercises too little: %d grants by image-label selectors, %d by host selectors", onImage, onHosts)
	}
}

func TestSetConcurrent(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	bs := randomWorld(r, 200)
	base := mustSet(t, bs...)
	targets := make([]Target, 100)
	wants := make([][]Grant, len(targets))
	for i := range targets {
		targets[i] = randomTarget(r)
		wants[i] = base.Match(targets[i])
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			s := base
			for i := range 200 {
				if w%2 == 0 { // writers derive new sets from the shared base
					var err error
					if s, err = s.With(Binding{Name: fmt.Sprintf("w%d-%d", w, i), Secret: "s/x", Selector: "app=a"}); err != nil {
						t.Error(err)
						return
					}
					s = s.Without(bs[i%len(bs)].Name)
				}
				j := i % len(targets)
				if got := base.Match(targets[j]); !reflect.DeepEqual(got, wants[j]) {
					t.Errorf("base changed: %v != %v", got, wants[j])
					return
				}
				_ = s.Match(targets[j])
			}
		})
	}
	wg.Wait()
}
