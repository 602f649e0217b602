package api

import (
	"strings"
	"testing"

	"coffer/internal/policy"
)

// whyNot agrees with policy.Set.Match: for every binding and target, it
// finds a reason exactly when the binding does not match.
func TestWhyNotAgreesWithMatch(t *testing.T) {
	digest := "sha256:" + strings.Repeat("a", 64)
	var bindings []policy.Binding
	for i, b := range []policy.Binding{
		{Selector: "app=web"},
		{Selector: "app in (web,api),!debug"},
		{Selector: "env!=dev,tier"},
		{Selector: "app=web", Image: "registry.example.com/web:*"},
		{Selector: "app=web", Image: digest},
		{Selector: "app=web", Hosts: "env=prod,zone in (eu-1,eu-2)"},
		{Selector: "app=web", Hosts: "!debug"},
		{Selector: "image.label/app=pay,app=web", Image: "registry.example.com/pay/*"},
		{Selector: "!image.label/debug", Image: "registry.example.com/pay/*"},
		{Selector: "image.label/tier", Image: "registry.example.com/pay/*", Hosts: "env"},
	} {
		b.Name, b.Secret = "b"+string(rune('a'+i)), "s"
		if err := b.Normalize(); err != nil {
			t.Fatal(err)
		}
		bindings = append(bindings, b)
	}
	var targets []policy.Target
	for _, ls := range []map[string]string{nil, {"app": "web"}, {"app": "api", "debug": ""}, {"app": "web", "tier": "1", "env": "prod"}, {"app": "web", "image.label/app": "pay"}} {
		for _, img := range []struct{ ref, digest string }{{"", ""}, {"registry.example.com/web:1", ""}, {"registry.example.com/pay/api:2", digest}, {"evil.io/pay/api:2", ""}} {
			for _, il := range []map[string]string{nil, {"app": "pay"}, {"debug": "1", "tier": "gold"}} {
				for _, hl := range []map[string]string{nil, {"env": "prod", "zone": "eu-1"}, {"env": "dev", "debug": "1"}} {
					targets = append(targets, policy.Target{Labels: ls, Image: img.ref, ImageDigest: img.digest, ImageLabels: il, HostLabels: hl})
				}
			}
		}
	}
	for _, b := range bindings {
		set, err := policy.NewSet([]policy.Binding{b})
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range targets {
			matched := len(set.Match(tg)) == 1
			stage, reason := whyNot(b, tg)
			if matched != (stage == failOther) {
				t.Errorf("binding %+v, target %+v: Match says %v, whyNot says %q", b, tg, matched, reason)
			}
		}
	}
}
