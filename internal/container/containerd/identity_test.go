package containerd

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func sandbox(ns, name string, labels map[string]string) *runtimeapi.PodSandbox {
	return &runtimeapi.PodSandbox{Id: "sb", Metadata: &runtimeapi.PodSandboxMetadata{Namespace: ns, Name: name, Uid: "u"}, Labels: labels}
}

func TestPodLabels(t *testing.T) {
	p, err := podOf(sandbox("evil", "p", map[string]string{
		"app": "web", LabelNamespace: "shop", LabelPod: "x", LabelContainer: "y", LabelServiceAccount: "admin",
		"io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.name": "x", "io.kubernetes.pod.uid": "z",
		"io.cri-containerd.kind": "sandbox", "io.kubernetes.other": "kept",
	}))
	if err != nil {
		t.Fatal(err)
	}
	got := labelsOf(p, "c")
	want := map[string]string{"app": "web", "io.kubernetes.other": "kept", LabelNamespace: "evil", LabelPod: "p", LabelContainer: "c"}
	if len(got) != len(want) {
		t.Fatalf("labels = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("labels[%q] = %q, want %q", k, got[k], v)
		}
	}
	if _, ok := got[LabelServiceAccount]; ok {
		t.Error("a pod claimed a ServiceAccount")
	}
}

func TestPodBounds(t *testing.T) {
	many := map[string]string{}
	for i := range MaxLabels + 1 {
		many[strings.Repeat("k", 3)+string(rune('a'+i%26))+strings.Repeat("x", i/26)] = "v"
	}
	for name, sb := range map[string]*runtimeapi.PodSandbox{
		"too many labels": sandbox("ns", "p", many),
		"too many bytes":  sandbox("ns", "p", map[string]string{"a": strings.Repeat("v", MaxLabelsBytes)}),
		"bad utf-8 value": sandbox("ns", "p", map[string]string{"a": "\xff"}),
		"bad utf-8 key":   sandbox("ns", "p", map[string]string{"\xfe": "v"}),
		"bad utf-8 name":  sandbox("ns", "p\xff", nil),
		"huge namespace":  sandbox(strings.Repeat("n", maxFieldBytes+1), "p", nil),
	} {
		if _, err := podOf(sb); !errors.Is(err, errIdentity) {
			t.Errorf("%s: err = %v, want errIdentity", name, err)
		}
	}
	if _, err := podOf(sandbox("", "", nil)); err != nil {
		t.Errorf("a pod with no labels and empty metadata: %v", err)
	}
}

func TestImageDigest(t *testing.T) {
	for ref, want := range map[string]string{
		"sha256:abc":               "sha256:abc",
		"docker.io/x/y@sha256:abc": "sha256:abc",
		"":                         "",
	} {
		if got := imageDigest(&runtimeapi.Container{ImageRef: ref}); got != want {
			t.Errorf("imageDigest(%q) = %q, want %q", ref, got, want)
		}
	}
}

// FuzzPodOf: whatever a sandbox holds, podOf never panics, never lets a pod
// label set a reserved key, and reports only valid UTF-8 within bounds.
func FuzzPodOf(f *testing.F) {
	f.Add("ns", "pod", "app", "web", LabelNamespace, "shop")
	f.Add("", "", "", "", "\xff", "☃")
	f.Fuzz(func(t *testing.T, ns, name, k1, v1, k2, v2 string) {
		p, err := podOf(sandbox(ns, name, map[string]string{k1: v1, k2: v2}))
		if err != nil {
			return
		}
		ls := labelsOf(p, "c")
		if ls[LabelNamespace] != ns || ls[LabelPod] != name || ls[LabelContainer] != "c" {
			t.Fatalf("reserved keys %v from ns %q name %q", ls, ns, name)
		}
		if _, ok := ls[LabelServiceAccount]; ok {
			t.Fatal("service account label reported")
		}
		size := 0
		for k, v := range ls {
			size += len(k) + len(v)
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				t.Fatalf("invalid UTF-8 reported: %q=%q", k, v)
			}
		}
		if len(ls) > MaxLabels+3 || size > MaxLabelsBytes+3*maxFieldBytes+64 {
			t.Fatalf("labels beyond bounds: %d, %d bytes", len(ls), size)
		}
	})
}
