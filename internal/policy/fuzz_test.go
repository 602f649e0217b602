package policy

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
)

// FuzzParseSelector checks that any input either fails with ErrInvalid or
// yields a canonical form that parses to itself and means the same thing.
func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{
		"app=web", "app==web", "app!=web", "env in (prod,staging)", "env notin (dev)", "tier", "!debug",
		"app=web,!debug,env in (a,b,)", "x in ()", "a=,b!=", "example.com/role=db", "n>1", "", " , ", "a in (b",
		"app=web,app=web,app!=db", "!a,!a", "a notin (,x)",
	} {
		f.Add(s)
	}
	probes := []labels.Set{
		{}, {"app": "web"}, {"app": "db", "env": "prod"}, {"env": "dev", "debug": ""}, {"x": "", "a": "b", "tier": "1"},
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		canon := sel.String()
		again, err := ParseSelector(canon)
		if err != nil {
			t.Fatalf("canonical %q of %q does not parse: %v", canon, s, err)
		}
		if again.String() != canon {
			t.Fatalf("canonical form not stable: %q -> %q -> %q", s, canon, again.String())
		}
		for _, p := range probes {
			if sel.Matches(p) != again.Matches(p) {
				t.Fatalf("%q and its canonical %q disagree on %v", s, canon, p)
			}
		}
	})
}

// FuzzNormalize checks that Normalize never panics, that errors wrap
// ErrInvalid, that a normalized binding normalizes to itself and compiles
// into a Set, and that the Set matches it as the specification does (host
// selector, image labels, container labels posing as image labels).
func FuzzNormalize(f *testing.F) {
	f.Add("web-db", "payments/db", "app=web", "", "", "", uint32(0), 0, 0)
	f.Add("b", "s", "env in (a,b),!debug", "busybox:1.*", "env=a", "f.txt", uint32(0o440), 1000, 1000)
	f.Add("b", "a/b/c", "tier", "sha256:"+hexA, "zone in (eu-1, eu-2),!debug", "", uint32(0o777), 0, 65534)
	f.Add("B", "s", "", "@", " ", "../x", uint32(0o1000), -1, 1<<40)
	f.Add("b", "s", "image.label/app=web,env", "registry.example.com/team/*", "", "", uint32(0), 0, 0)
	f.Add("b", "s", "!image.label/debug,image.label/app in (web,a)", "**/app@"+digestA, "env!=a", "", uint32(0), 0, 0)
	f.Add("b", "s", "image.label/app", "**/app", "image.label/x", "", uint32(0), 0, 0)
	targets := []Target{
		{Labels: map[string]string{"app": "web", "env": "a"}, HostLabels: map[string]string{"env": "a", "zone": "eu-1"}},
		{Labels: map[string]string{"app": "web", ImageLabelPrefix + "app": "web", ImageLabelPrefix + "debug": ""}, Image: "registry.example.com/team/app:1"},
		{ImageLabels: map[string]string{"app": "web", "tier": "1"}, HostLabels: map[string]string{"env": "b"}, Image: "busybox:1.36", ImageDigest: digestA},
		{Labels: map[string]string{"env": "b", "tier": ""}, ImageLabels: map[string]string{"app": "a", "debug": "1"}, Image: "ghcr.io/x/app@" + digestA},
	}
	f.Fuzz(func(t *testing.T, name, sec, sel, image, hosts, file string, mode uint32, uid, gid int) {
		b := Binding{Name: name, Secret: sec, Selector: sel, Image: image, Hosts: hosts, File: file, Mode: mode, UID: uid, GID: gid}
		orig := b
		if err := b.Normalize(); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			if b != orig {
				t.Fatalf("Normalize changed the binding on error")
			}
			return
		}
		if strings.Contains(b.Selector, ImageLabelPrefix) && b.Image == "" {
			t.Fatalf("%+v: image labels without an image pattern", b)
		}
		again := b
		if err := again.Normalize(); err != nil {
			t.Fatalf("normalized %+v does not normalize: %v", b, err)
		}
		if again != b {
			t.Fatalf("not idempotent:\n%+v\n%+v", b, again)
		}
		s, err := NewSet([]Binding{b})
		if err != nil {
			t.Fatalf("NewSet: %v", err)
		}
		if got, _ := s.Get(b.Name); got != b {
			t.Fatalf("Get = %+v, want %+v", got, b)
		}
		spec := newBrute(t, []Binding{b})
		for _, tg := range append(targets, Target{Labels: map[string]string{"app": "web", "env": "a"}, Image: image, ImageDigest: image}) {
			if got, want := len(s.Match(tg)) == 1, spec[0].matches(tg); got != want {
				t.Fatalf("%+v on %+v: Match %v, specification %v", b, tg, got, want)
			}
		}
	})
}

// FuzzParseImagePattern checks that patterns parse to a canonical form that
// is stable, and that matching never panics.
func FuzzParseImagePattern(f *testing.F) {
	for _, s := range []string{
		"busybox", "busybox:1", "registry.example.com/team/*", "registry:5000/app:v1", "**/app", "**",
		"*/team/app", "docker.io/busybox", "index.docker.io/x", "sha256:" + hexA, "@sha256:" + hexA,
		"ghcr.io/o/app:1@sha256:" + hexA, "a[", "r.io/**/x/**", "Localhost:1/a", "@", "x@", ":x",
	} {
		f.Add(s, "busybox:1.36")
	}
	f.Fuzz(func(t *testing.T, s, image string) {
		p, err := ParseImagePattern(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		canon := p.String()
		again, err := ParseImagePattern(canon)
		if err != nil {
			t.Fatalf("canonical %q of %q does not parse: %v", canon, s, err)
		}
		if again.String() != canon {
			t.Fatalf("canonical form not stable: %q -> %q -> %q", s, canon, again.String())
		}
		for _, img := range []string{image, "busybox", "r.io/a/b:1", strings.TrimPrefix(canon, "**/")} {
			if p.Match(img, image) != again.Match(img, image) {
				t.Fatalf("%q and %q disagree on %q", s, canon, img)
			}
		}
	})
}
