package policy

import (
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
)

// benchWorld is a 10,000-binding policy over a realistic fleet: 1,000 apps
// in 50 teams and 3 environments, about ten bindings per app (some per
// environment, some pinned to an image), a few team-wide and a few global
// bindings.
func benchWorld() []Binding {
	envs := []string{"prod", "staging", "dev"}
	var bs []Binding
	for i := range 9_916 {
		app := fmt.Sprintf("app-%d", i%1000)
		b := Binding{
			Name:   fmt.Sprintf("%s/b%d", app, i/1000),
			Secret: fmt.Sprintf("%s/secret-%d", app, i/1000),
		}
		switch i / 1000 % 4 {
		case 0:
			b.Selector = "app=" + app
		case 1:
			b.Selector = fmt.Sprintf("app=%s,env=%s", app, envs[i%3])
		case 2:
			b.Selector = fmt.Sprintf("env in (prod,staging),app=%s,team=team-%d", app, i%50)
		case 3:
			b.Selector = fmt.Sprintf("app=%s,!debug", app)
			b.Image = fmt.Sprintf("registry.example.com/team-%d/*:1.*", i%50)
		}
		bs = append(bs, b)
	}
	for i := range 80 {
		bs = append(bs, Binding{
			Name:     fmt.Sprintf("team/t%d", i),
			Secret:   fmt.Sprintf("teams/team-%d/token", i%50),
			File:     fmt.Sprintf("team-token-%d", i),
			Selector: fmt.Sprintf("team=team-%d,tier", i%50),
		})
	}
	for i := range 4 {
		bs = append(bs, Binding{
			Name:     fmt.Sprintf("global/g%d", i),
			Secret:   fmt.Sprintf("global/ca-%d", i),
			Selector: fmt.Sprintf("!debug,env notin (dev),site-%d notin (blocked)", i),
		})
	}
	return bs
}

func benchTargets() []Target {
	envs := []string{"prod", "staging", "dev"}
	ts := make([]Target, 256)
	for i := range ts {
		team := fmt.Sprintf("team-%d", i*7%50)
		ts[i] = Target{
			Labels: map[string]string{
				"app":                             fmt.Sprintf("app-%d", i*37%1000),
				"env":                             envs[i%3],
				"team":                            team,
				"tier":                            "backend",
				"version":                         "1.4.2",
				"com.docker.compose.project":      "shop",
				"com.docker.compose.service":      fmt.Sprintf("svc-%d", i),
				"org.opencontainers.image.source": "https://example.com/repo",
				"maintainer":                      "ops@example.com",
			},
			Image:       fmt.Sprintf("registry.example.com/%s/app-%d:1.4.2", team, i),
			ImageDigest: digestA,
		}
	}
	return ts
}

func benchSet(b *testing.B) *Set {
	s, err := NewSet(benchWorld())
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func BenchmarkMatch10k(b *testing.B) {
	s := benchSet(b)
	ts := benchTargets()
	grants, cands := 0, 0
	for _, t := range ts {
		grants += len(s.Match(t))
		cands += candidates(s, t)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		s.Match(ts[i%len(ts)])
		i++
	}
	b.ReportMetric(float64(grants)/float64(len(ts)), "grants/match")
	b.ReportMetric(float64(cands)/float64(len(ts)), "evaluated/match")
}

// needToKnowWorld is benchWorld with host selectors on a third of the
// bindings, image-label requirements on half of the image-pinned ones, and
// 1,000 bindings that select by image label alone (indexed under
// image.label/ keys).
func needToKnowWorld() []Binding {
	bs := benchWorld()
	for i := range bs {
		switch {
		case i%3 == 0:
			bs[i].Hosts = "zone in (eu-1,eu-2),!quarantine"
		case bs[i].Image != "" && i%2 == 0:
			bs[i].Selector += ",image.label/org.opencontainers.image.vendor=" + strings.Split(bs[i].Image, "/")[1]
		}
	}
	for i := range 1000 {
		bs = append(bs, Binding{
			Name:     fmt.Sprintf("img/app-%d", i),
			Secret:   fmt.Sprintf("app-%d/image-token", i),
			Selector: fmt.Sprintf("image.label/org.opencontainers.image.title=app-%d", i),
			Image:    fmt.Sprintf("registry.example.com/team-%d/*", i%50),
			Hosts:    "env=prod",
		})
	}
	return bs
}

// needToKnowTargets are benchTargets with the labels the agent's host and
// the image carry.
func needToKnowTargets() []Target {
	ts := benchTargets()
	zones := []string{"eu-1", "eu-2", "us-1"}
	for i := range ts {
		team := ts[i].Labels["team"]
		ts[i].HostLabels = map[string]string{"env": ts[i].Labels["env"], "zone": zones[i%3], "rack": fmt.Sprintf("r%d", i%16)}
		ts[i].ImageLabels = map[string]string{
			"org.opencontainers.image.title":    fmt.Sprintf("app-%d", i*37%1000),
			"org.opencontainers.image.vendor":   team,
			"org.opencontainers.image.version":  "1.4.2",
			"org.opencontainers.image.revision": "9f2c1e7",
			"org.opencontainers.image.source":   "https://example.com/repo",
			"maintainer":                        "ops@example.com",
		}
	}
	return ts
}

// BenchmarkMatch10kNeedToKnow is BenchmarkMatch10k with host selectors and
// image labels on both sides.
func BenchmarkMatch10kNeedToKnow(b *testing.B) {
	s, err := NewSet(needToKnowWorld())
	if err != nil {
		b.Fatal(err)
	}
	ts := needToKnowTargets()
	grants, cands := 0, 0
	for _, t := range ts {
		grants += len(s.Match(t))
		cands += candidates(s, t)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		s.Match(ts[i%len(ts)])
		i++
	}
	b.ReportMetric(float64(grants)/float64(len(ts)), "grants/match")
	b.ReportMetric(float64(cands)/float64(len(ts)), "evaluated/match")
}

// candidates counts the bindings Match evaluates for t.
func candidates(s *Set, t Target) int {
	n := len(s.rest)
	for k, v := range t.Labels {
		if strings.HasPrefix(k, ImageLabelPrefix) {
			continue
		}
		eq, _ := s.eq.get(eqKey(k, v))
		ex, _ := s.exists.get(k)
		n += len(eq) + len(ex)
	}
	for k, v := range t.ImageLabels {
		if s.imageKeys[k] > 0 {
			eq, _ := s.eq.get(eqKey(ImageLabelPrefix+k, v))
			ex, _ := s.exists.get(ImageLabelPrefix + k)
			n += len(eq) + len(ex)
		}
	}
	return n
}

// BenchmarkMatchLinear10k evaluates every binding, as a Set without an
// index would: the yardstick for BenchmarkMatch10k.
func BenchmarkMatchLinear10k(b *testing.B) {
	s := benchSet(b)
	ts := benchTargets()
	var all []*compiled
	for _, m := range s.byName.m {
		for _, c := range m {
			all = append(all, c)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		t := ts[i%len(ts)]
		var ref imageRef
		n := 0
		for _, c := range all {
			if c.matches(labels.Set(t.Labels), t, &ref) {
				n++
			}
		}
		i++
	}
}

func BenchmarkNewSet10k(b *testing.B) {
	bs := benchWorld()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewSet(bs); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWith10k(b *testing.B) {
	s := benchSet(b)
	add := make([]Binding, 64)
	for i := range add {
		add[i] = Binding{Name: fmt.Sprintf("app-%d/new", i), Secret: "s/new", Selector: fmt.Sprintf("app=app-%d,env=prod", i)}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.With(add[i%len(add)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkWithReplace10k replaces an existing binding, which also takes
// the old one out of the index.
func BenchmarkWithReplace10k(b *testing.B) {
	s := benchSet(b)
	bs := benchWorld()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		nb := bs[(i*101)%len(bs)]
		nb.Mode = 0o440
		if _, err := s.With(nb); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkWithout10k(b *testing.B) {
	s := benchSet(b)
	bs := benchWorld()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s.Without(bs[(i*101)%len(bs)].Name)
		i++
	}
}
