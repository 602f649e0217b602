package cli

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"coffer/internal/policy"
)

// What export writes, apply reads back to the same bindings, whatever
// characters the selectors and patterns hold.
func TestManifestRoundTrip(t *testing.T) {
	var bs []binding
	for _, b := range []binding{
		{Binding: policy.Binding{Name: "a", Secret: "payments/db", Selector: "!debug,tier"}},
		{Binding: policy.Binding{Name: "b/c", Secret: "s", Selector: "app in (web,api),env!=dev", Image: "**/app@sha256:" + strings.Repeat("a", 64),
			Hosts: "zone in (eu-1,eu-2)", File: "f.txt", Mode: 0o440, UID: 1000, GID: 65534}, ManagedBy: "coffer-apply"},
		{Binding: policy.Binding{Name: "d", Secret: "s", Selector: "image.label/app=x", Image: "registry.example.com/team/*:1.*"}},
		{Binding: policy.Binding{Name: "d2", Secret: "s", Selector: "y", Image: "*.example.com/team/*:1.*"}},
		{Binding: policy.Binding{Name: "e", Secret: "s", Selector: "x", Image: "registry:5000/a:[0-9]*"}},
		{Binding: policy.Binding{Name: "f", Secret: "s", Selector: "x", Rotation: "signal:SIGHUP"}},
		{Binding: policy.Binding{Name: "g", Secret: "s", Selector: "x", Rotation: "none"}},
	} {
		if err := b.Normalize(); err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	var out bytes.Buffer
	if err := writeManifest(&out, []string{"payments/db", "s"}, bs); err != nil {
		t.Fatal(err)
	}
	var m manifest
	if err := m.parse("x.yaml", out.Bytes()); err != nil {
		t.Fatalf("%v:\n%s", err, out.String())
	}
	var got []binding
	for _, b := range m.bindings {
		got = append(got, b.v)
	}
	if !reflect.DeepEqual(got, bs) {
		t.Fatalf("read back\n%+v\nwrote\n%+v\n%s", got, bs, out.String())
	}
	if len(m.secrets) != 2 || m.secrets[0].v != "payments/db" || m.secrets[0].pos != "x.yaml:1" {
		t.Fatalf("secrets = %+v", m.secrets)
	}
}

func TestManifestForms(t *testing.T) {
	var m manifest
	err := m.parse("a.yaml", []byte(`# comment only document
---
bindings:
  - name: one
    secret: s
    selector: app=web
    mode: 0o640
  - kind: Binding
    name: two
    secret: s
    selector: app=web
    mode: 640
    uid: ~
    image:
secrets: []
---
kind: Binding
name: three
secret: s
selector: app=web
mode: "0640"
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.bindings) != 3 {
		t.Fatalf("bindings = %+v", m.bindings)
	}
	for _, b := range m.bindings {
		if b.v.Mode != 0o640 {
			t.Errorf("%s: mode %o", b.v.Name, b.v.Mode)
		}
	}
	if m.bindings[0].pos != "a.yaml:4" || m.bindings[2].pos != "a.yaml:17" {
		t.Errorf("positions %s, %s", m.bindings[0].pos, m.bindings[2].pos)
	}
}

// FuzzManifest checks that any file either parses into valid, normalized
// bindings with unique names or fails with an error naming the file, and
// never panics.
func FuzzManifest(f *testing.F) {
	for _, s := range []string{
		"kind: Binding\nname: a\nsecret: s\nselector: app=web\n",
		"bindings:\n  - {name: a, secret: s, selector: 'x', mode: 0440, uid: 1, gid: 2}\nsecrets:\n  - name: s\n",
		"kind: Secret\nname: s\n---\nkind: Binding\nname: b\nsecret: s\nselector: '!x'\nimage: '**'\nhosts: a=b\n",
		"a: &x 1\nb: *x\n", "<<: {a: 1}\n", "kind: [\n", "- 1\n- 2\n", "kind: Binding\nname: a\nname: b\n", "\x00",
		"kind: Binding\nname: a\nsecret: s\nselector: a\nmode: 0x1ff\n", "bindings: ~\n", "kind: !!binary aGk=\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m manifest
		if err := m.parse("f.yaml", data); err != nil {
			if !strings.HasPrefix(err.Error(), "f.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, b := range m.bindings {
			if seen[b.v.Name] {
				t.Fatalf("binding %q twice", b.v.Name)
			}
			seen[b.v.Name] = true
			n := b.v.Binding
			if err := n.Normalize(); err != nil || n != b.v.Binding {
				t.Fatalf("binding %+v is not normalized: %v", b.v, err)
			}
		}
	})
}
