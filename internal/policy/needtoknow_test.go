package policy

import (
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// Host selectors and image labels: what a container gets depends on the
// host that reports it and on its image's labels, which its own labels
// cannot stand in for.
func TestMatchHostsAndImageLabels(t *testing.T) {
	s := mustSet(t,
		Binding{Name: "prod-db", Secret: "payments/db", Selector: "app=web", Hosts: "env=prod"},
		Binding{Name: "eu-only", Secret: "payments/eu", Selector: "app=web", Hosts: "zone in (eu-1,eu-2),!quarantine"},
		Binding{Name: "not-quarantined", Secret: "ops/nq", Selector: "app=web", Hosts: "!quarantine"},
		Binding{Name: "any-host", Secret: "ops/any", Selector: "app=web"},
		Binding{Name: "pay-img", Secret: "payments/img", Selector: "image.label/app=payments", Image: "registry.example.com/pay/*"},
		Binding{Name: "pay-img-nodebug", Secret: "payments/nd", Selector: "image.label/app in (payments),!image.label/debug", Image: "registry.example.com/pay/*"},
		Binding{Name: "pay-img-tier", Secret: "payments/tier", Selector: "image.label/tier", Image: digestA},
		Binding{Name: "pay-img-prod", Secret: "payments/ip", Selector: "image.label/app=payments,env=prod", Image: "registry.example.com/pay/api", Hosts: "env=prod"},
	)
	prodEU := map[string]string{"env": "prod", "zone": "eu-1"}
	payImage := "registry.example.com/pay/api:1.2"
	tests := []struct {
		name string
		t    Target
		want []string // binding names, in file order
	}{
		{"web on a prod eu host", Target{Labels: map[string]string{"app": "web"}, HostLabels: prodEU},
			[]string{"any-host", "prod-db", "eu-only", "not-quarantined"}},
		{"web on a dev host", Target{Labels: map[string]string{"app": "web"}, HostLabels: map[string]string{"env": "dev", "zone": "us-1"}},
			[]string{"any-host", "not-quarantined"}},
		{"container labels do not stand in for host labels", Target{
			Labels: map[string]string{"app": "web", "env": "prod", "zone": "eu-1"}, HostLabels: map[string]string{"env": "dev"}},
			[]string{"any-host", "not-quarantined"}},
		{"quarantined eu host", Target{Labels: map[string]string{"app": "web"}, HostLabels: map[string]string{"env": "prod", "zone": "eu-1", "quarantine": "1"}},
			[]string{"any-host", "prod-db"}},
		{"host without labels", Target{Labels: map[string]string{"app": "web"}},
			[]string{"any-host", "not-quarantined"}},
		{"host with empty labels", Target{Labels: map[string]string{"app": "web"}, HostLabels: map[string]string{}},
			[]string{"any-host", "not-quarantined"}},
		{"payments image", Target{ImageLabels: map[string]string{"app": "payments"}, Image: payImage},
			[]string{"pay-img", "pay-img-nodebug"}},
		{"payments debug image", Target{ImageLabels: map[string]string{"app": "payments", "debug": "true"}, Image: payImage},
			[]string{"pay-img"}},
		{"payments image on prod, container env=prod", Target{Labels: map[string]string{"env": "prod"},
			ImageLabels: map[string]string{"app": "payments"}, Image: payImage, HostLabels: prodEU},
			[]string{"pay-img", "pay-img-prod", "pay-img-nodebug"}},
		{"payments image on dev", Target{Labels: map[string]string{"env": "prod"},
			ImageLabels: map[string]string{"app": "payments"}, Image: payImage, HostLabels: map[string]string{"env": "dev"}},
			[]string{"pay-img", "pay-img-nodebug"}},
		{"image labels from an image the binding does not trust", Target{ImageLabels: map[string]string{"app": "payments", "tier": "x"}, Image: "evil.example.com/pay/api:1.2"},
			nil},
		{"digest-pinned image label", Target{ImageLabels: map[string]string{"tier": ""}, Image: "anything:1", ImageDigest: digestA},
			[]string{"pay-img-tier"}},
		{"spoofed: container label image.label/app", Target{Labels: map[string]string{"image.label/app": "payments"}, Image: payImage},
			nil},
		{"spoofed: container label image.label/tier on the pinned digest", Target{Labels: map[string]string{"image.label/tier": "x"}, Image: "x", ImageDigest: digestA},
			nil},
		{"spoofed label beside a real image label of another value", Target{Labels: map[string]string{"image.label/app": "payments"},
			ImageLabels: map[string]string{"app": "billing"}, Image: payImage},
			nil},
		{"spoofed image.label/debug does not hide the real one", Target{Labels: map[string]string{"image.label/debug": ""},
			ImageLabels: map[string]string{"app": "payments"}, Image: payImage},
			[]string{"pay-img", "pay-img-nodebug"}},
		{"image labels are not container labels", Target{ImageLabels: map[string]string{"app": "web"}, HostLabels: prodEU},
			nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := names(s.Match(tt.t))
			if tt.want == nil {
				tt.want = []string{}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got  %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestNormalizeHostsAndImageLabels(t *testing.T) {
	tests := []struct {
		name string
		in   Binding
		want Binding
	}{
		{
			name: "hosts canonical",
			in:   Binding{Name: "b", Secret: "s", Selector: "app=web", Hosts: " zone in (eu-2, eu-1), env==prod,env=prod "},
			want: Binding{Name: "b", Secret: "s", Selector: "app=web", Hosts: "env=prod,zone in (eu-1,eu-2)", File: "s", Mode: 0o400},
		},
		{
			name: "hosts one-value set and notin",
			in:   Binding{Name: "b", Secret: "s", Selector: "app=web", Hosts: "env in (prod),zone notin (us-1),!quarantine,rack"},
			want: Binding{Name: "b", Secret: "s", Selector: "app=web", Hosts: "env=prod,!quarantine,rack,zone!=us-1", File: "s", Mode: 0o400},
		},
		{
			name: "no hosts: any host",
			in:   Binding{Name: "b", Secret: "s", Selector: "app=web"},
			want: Binding{Name: "b", Secret: "s", Selector: "app=web", File: "s", Mode: 0o400},
		},
		{
			name: "image label with a repository glob",
			in:   Binding{Name: "b", Secret: "s", Selector: "image.label/app in (payments), app==web", Image: "registry.example.com/pay/*"},
			want: Binding{Name: "b", Secret: "s", Selector: "app=web,image.label/app=payments", Image: "registry.example.com/pay/*", File: "s", Mode: 0o400},
		},
		{
			name: "image label with an official image",
			in:   Binding{Name: "b", Secret: "s", Selector: "!image.label/debug,app", Image: "busybox:1.*"},
			want: Binding{Name: "b", Secret: "s", Selector: "app,!image.label/debug", Image: "docker.io/library/busybox:1.*", File: "s", Mode: 0o400},
		},
		{
			name: "image label with a digest",
			in:   Binding{Name: "b", Secret: "s", Selector: "image.label/org.opencontainers.image.title=api", Image: "@" + digestA},
			want: Binding{Name: "b", Secret: "s", Selector: "image.label/org.opencontainers.image.title=api", Image: digestA, File: "s", Mode: 0o400},
		},
		{
			name: "image label with any repository but a digest",
			in:   Binding{Name: "b", Secret: "s", Selector: "image.label/tier", Image: "**@" + digestA},
			want: Binding{Name: "b", Secret: "s", Selector: "image.label/tier", Image: "**@" + digestA, File: "s", Mode: 0o400},
		},
		{
			name: "image label with a namespace and deep glob",
			in:   Binding{Name: "b", Secret: "s", Selector: "image.label/tier", Image: "ghcr.io/org/**", Hosts: "env=prod"},
			want: Binding{Name: "b", Secret: "s", Selector: "image.label/tier", Image: "ghcr.io/org/**", Hosts: "env=prod", File: "s", Mode: 0o400},
		},
		{
			name: "image.label without the slash is an ordinary key",
			in:   Binding{Name: "b", Secret: "s", Selector: "image.label=x"},
			want: Binding{Name: "b", Secret: "s", Selector: "image.label=x", File: "s", Mode: 0o400},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.in
			if err := b.Normalize(); err != nil {
				t.Fatal(err)
			}
			if b != tt.want {
				t.Errorf("got  %+v\nwant %+v", b, tt.want)
			}
			again := b
			if err := again.Normalize(); err != nil || again != b {
				t.Errorf("re-normalize: %+v, %v", again, err)
			}
			s := mustSet(t, tt.in)
			if got, _ := s.Get(b.Name); got != b {
				t.Errorf("Set stores %+v, want %+v", got, b)
			}
		})
	}
}

func TestNormalizeHostsAndImageLabelsInvalid(t *testing.T) {
	ok := Binding{Name: "b", Secret: "s", Selector: "app=web"}
	img := Binding{Name: "b", Secret: "s", Selector: "image.label/app=payments", Image: "registry.example.com/pay/*"}
	with := func(base Binding, f func(*Binding)) Binding { b := base; f(&b); return b }
	const untrusted = `the selector uses image.label/ keys, which the image's author chooses, so the binding must say which images it trusts`
	tests := []struct {
		name string
		in   Binding
		msg  string
	}{
		{"hosts blank", with(ok, func(b *Binding) { b.Hosts = " " }), `invalid binding "b": hosts " ": no requirement: leave hosts empty ("") to mean any host`},
		{"hosts unclosed", with(ok, func(b *Binding) { b.Hosts = "env in (prod" }), `invalid binding "b": hosts "env in (prod": `},
		{"hosts trailing comma", with(ok, func(b *Binding) { b.Hosts = "env=prod," }), `hosts "env=prod,": found '', expected: identifier after ','`},
		{"hosts bad key", with(ok, func(b *Binding) { b.Hosts = "-env=prod" }), `hosts "-env=prod": `},
		{"hosts gt", with(ok, func(b *Binding) { b.Hosts = "cores>4" }), `hosts "cores>4": requirement "cores>4": the operators '<' and '>' are not supported`},
		{"hosts too long", with(ok, func(b *Binding) { b.Hosts = strings.Repeat("a=b,", 1100) + "a=b" }), "longer than 4096 bytes"},
		{"hosts on image labels", with(ok, func(b *Binding) { b.Hosts = "image.label/app=x" }),
			`hosts "image.label/app=x": key "image.label/app": the image.label/ prefix names image labels, which a host selector cannot see`},
		{"image label without image", with(img, func(b *Binding) { b.Image = "" }), `invalid binding "b": image "": ` + untrusted},
		{"image label with any image", with(img, func(b *Binding) { b.Image = "**" }), `image "**": ` + untrusted},
		{"image label with any registry", with(img, func(b *Binding) { b.Image = "**/pay/api" }), `image "**/pay/api": ` + untrusted},
		{"image label with a host glob", with(img, func(b *Binding) { b.Image = "*/pay/api" }), `image "*/pay/api": ` + untrusted},
		{"image label with a partial host glob", with(img, func(b *Binding) { b.Image = "*.example.com/pay/api" }), untrusted},
		{"image label with all of docker hub", with(img, func(b *Binding) { b.Image = "docker.io/**" }), untrusted},
		{"image label with any docker hub namespace", with(img, func(b *Binding) { b.Image = "docker.io/*/api" }), untrusted},
		{"image label with any namespace", with(img, func(b *Binding) { b.Image = "registry.example.com/*" }), untrusted},
		{"image label with a namespace glob", with(img, func(b *Binding) { b.Image = "ghcr.io/pay-*/api" }), untrusted},
		{"image label with tag only pinned", with(img, func(b *Binding) { b.Image = "**:1.2" }), untrusted},
		{"negated image label needs an image too", with(ok, func(b *Binding) { b.Selector = "app=web,!image.label/debug" }), `image "": ` + untrusted},
		{"bad image pattern is reported as such", with(img, func(b *Binding) { b.Image = "Pay" }), `image "Pay": repository "Pay": must be lower-case`},
		{"empty image label name", with(img, func(b *Binding) { b.Selector = "image.label/=x" }), `selector "image.label/=x": `},
		{"image label key with a slash", with(img, func(b *Binding) { b.Selector = "image.label/a/b=x" }), `selector "image.label/a/b=x": `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.in
			err := b.Normalize()
			if err == nil {
				t.Fatalf("no error for %+v", tt.in)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q\ndoes not say %q", err, tt.msg)
			}
			if b != tt.in {
				t.Errorf("Normalize changed the binding on error: %+v", b)
			}
			if _, err := mustSet(t).With(tt.in); !errors.Is(err, ErrInvalid) {
				t.Errorf("With accepted it: %v", err)
			}
		})
	}
}

// Equality and existence requirements on image labels are indexed, and
// reached from the image's labels only.
func TestImageLabelIndex(t *testing.T) {
	pay := Binding{Name: "pay", Secret: "s/pay", Selector: "image.label/app=payments", Image: "registry.example.com/pay/*"}
	tier := Binding{Name: "tier", Secret: "s/tier", Selector: "image.label/tier,!debug", Image: digestA}
	both := Binding{Name: "both", Secret: "s/both", Selector: "app=web,image.label/app=payments", Image: "registry.example.com/pay/*"}
	s := mustSet(t, pay, tier, both)
	if len(s.rest) != 0 {
		t.Fatalf("%d bindings are evaluated for every container, want 0", len(s.rest))
	}
	c, _ := s.byName.get("pay")
	if c.index != inEq || !reflect.DeepEqual(c.keys, []string{eqKey("image.label/app", "payments")}) || c.imageKey != "app" {
		t.Errorf("pay indexed as %d %q %q", c.index, c.keys, c.imageKey)
	}
	if c, _ := s.byName.get("tier"); c.index != inExists || c.keys[0] != "image.label/tier" {
		t.Errorf("tier indexed as %d %q", c.index, c.keys)
	}
	// image.label/app=payments is wanted by two bindings, app=web by one:
	// both is indexed under the rarer pair, like any binding.
	if c, _ := s.byName.get("both"); c.keys[0] != eqKey("app", "web") || c.imageKey != "" {
		t.Errorf("both indexed under %q (image key %q)", c.keys, c.imageKey)
	}
	if want := map[string]int{"app": 1, "tier": 1}; !maps.Equal(s.imageKeys, want) {
		t.Errorf("imageKeys = %v, want %v", s.imageKeys, want)
	}
	img := "registry.example.com/pay/api:1"
	real := Target{Labels: map[string]string{"app": "web"}, ImageLabels: map[string]string{"app": "payments", "tier": "x"}, Image: img, ImageDigest: digestA}
	if got := names(s.Match(real)); !slices.Equal(got, []string{"both", "pay", "tier"}) {
		t.Errorf("real image labels: %v", got)
	}
	spoof := Target{Labels: map[string]string{"app": "web", "image.label/app": "payments", "image.label/tier": "x"}, Image: img, ImageDigest: digestA}
	if n := candidates(s, spoof); n > 1 {
		t.Errorf("a container's image.label/ labels reach %d bindings, want at most 1 (both, through app=web)", n)
	}
	if got := s.Match(spoof); got != nil {
		t.Errorf("spoofed image labels: %v", names(got))
	}
	// An image with many labels: only those the index names are looked up,
	// and those still reach their bindings.
	many := real
	many.ImageLabels = map[string]string{"app": "payments", "tier": "x", "a": "1", "b": "2", "c": "3", "d": "4"}
	if got := names(s.Match(many)); !slices.Equal(got, []string{"both", "pay", "tier"}) {
		t.Errorf("image with many labels: %v", got)
	}
	// The keys that let Match skip image labels follow With and Without,
	// copy on write.
	s1, err := s.With(Binding{Name: "more", Secret: "s/more", Selector: "image.label/app=payments,image.label/vendor=x", Image: digestA})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"app": 1, "tier": 1, "vendor": 1}; !maps.Equal(s1.imageKeys, want) { // vendor=x is the rarer pair
		t.Errorf("imageKeys = %v, want %v", s1.imageKeys, want)
	}
	s2, err := s1.With(Binding{Name: "pay", Secret: "s/pay", Selector: "app=pay"})
	if err != nil {
		t.Fatal(err)
	}
	s2 = s2.Without("tier").Without("both").Without("more")
	if len(s2.imageKeys) != 0 {
		t.Errorf("imageKeys = %v after the image-label bindings are gone", s2.imageKeys)
	}
	if want := map[string]int{"app": 1, "tier": 1}; !maps.Equal(s.imageKeys, want) || len(s.Match(real)) != 3 {
		t.Errorf("the original set changed: %v", s.imageKeys)
	}
}
