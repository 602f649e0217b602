// Package deploy holds the Kubernetes manifests and the Helm chart of
// Coffer; its test checks them (kubernetes/*.yaml parsed, the agent's
// privileges pinned, and the chart rendering the same objects with Helm).
package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"coffer/internal/testtools"
)

type obj map[string]any

func (o obj) get(path ...string) any {
	var cur any = o
	for _, p := range path {
		m, ok := asMap(cur)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

// asMap takes a decoded mapping (yaml.v3 decodes nested mappings into the
// outer map's type).
func asMap(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case obj:
		return m, true
	case map[string]any:
		return m, true
	}
	return nil, false
}

func (o obj) str(path ...string) string { s, _ := o.get(path...).(string); return s }
func (o obj) key() string               { return o.str("kind") + "/" + o.str("metadata", "name") }

func decodeAll(t *testing.T, data []byte) []obj {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []obj
	for {
		var o obj
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if o != nil {
			out = append(out, o)
		}
	}
}

func manifests(t *testing.T) []obj {
	t.Helper()
	var all []obj
	files, _ := filepath.Glob("kubernetes/*.yaml")
	if len(files) != 2 {
		t.Fatalf("manifests: %v", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, decodeAll(t, b)...)
	}
	return all
}

func find(t *testing.T, objs []obj, key string) obj {
	t.Helper()
	for _, o := range objs {
		if o.key() == key {
			return o
		}
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.key())
	}
	t.Fatalf("no %s in %v", key, keys)
	return nil
}

func container(t *testing.T, o obj) obj {
	t.Helper()
	cs, _ := o.get("spec", "template", "spec", "containers").([]any)
	if len(cs) != 1 {
		t.Fatalf("%s: %d containers", o.key(), len(cs))
	}
	m, _ := asMap(cs[0])
	return obj(m)
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// The agent gets exactly the privileges delivery needs, and no more; the
// server runs unprivileged; every namespaced object is in coffer-system.
func TestManifests(t *testing.T) {
	objs := manifests(t)
	for _, o := range objs {
		if o.str("apiVersion") == "" || o.str("kind") == "" || o.str("metadata", "name") == "" {
			t.Errorf("incomplete object: %v", o)
		}
		switch o.str("kind") {
		case "Namespace", "ClusterRole", "ClusterRoleBinding":
		default:
			if ns := o.str("metadata", "namespace"); ns != "coffer-system" {
				t.Errorf("%s in namespace %q", o.key(), ns)
			}
		}
	}
	ds := find(t, objs, "DaemonSet/coffer-agent")
	if ds.get("spec", "template", "spec", "hostPID") != true {
		t.Error("the agent needs hostPID to reach containers' /proc/<pid>")
	}
	if ds.get("spec", "template", "spec", "automountServiceAccountToken") != false {
		t.Error("the agent needs no Kubernetes API token")
	}
	c := container(t, ds)
	scm, _ := asMap(c.get("securityContext"))
	sc := obj(scm)
	if sc.get("privileged") != false {
		t.Error("the agent must not be privileged")
	}
	if drop := strs(sc.get("capabilities", "drop")); !slices.Equal(drop, []string{"ALL"}) {
		t.Errorf("drop %v", drop)
	}
	add := strs(sc.get("capabilities", "add"))
	sort.Strings(add)
	if !slices.Equal(add, []string{"SYS_ADMIN", "SYS_CHROOT", "SYS_PTRACE"}) {
		t.Errorf("the agent's capabilities %v: want exactly SYS_ADMIN, SYS_CHROOT, SYS_PTRACE", add)
	}
	args := strings.Join(strs(c.get("args")), " ")
	for _, want := range []string{"--runtime=containerd", "--containerd-socket=/run/containerd/containerd.sock", "--node-name=$(NODE_NAME)", "--server=coffer-server.coffer-system.svc:7443"} {
		if !strings.Contains(args, want) {
			t.Errorf("agent args lack %s: %s", want, args)
		}
	}
	if img := c.str("image"); !strings.HasPrefix(img, "coffer/coffer-agent:") {
		t.Errorf("agent image %q (make images writes coffer/coffer-agent:TAG)", img)
	}
	ss := find(t, objs, "StatefulSet/coffer-server")
	scm, _ = asMap(container(t, ss).get("securityContext"))
	sc = obj(scm)
	if sc.get("readOnlyRootFilesystem") != true || sc.get("allowPrivilegeEscalation") != false {
		t.Errorf("server security context: %v", sc)
	}
	if ss.get("spec", "template", "spec", "securityContext", "runAsNonRoot") != true {
		t.Error("the server must run as non-root")
	}
	role := find(t, objs, "ClusterRole/coffer-server")
	rules := role.get("rules").([]any)
	rule, _ := asMap(rules[0])
	if len(rules) != 1 || !slices.Equal(strs(rule["verbs"]), []string{"get", "list", "watch"}) {
		t.Errorf("the server's RBAC must be read-only on pods: %v", rules)
	}
}

// The chart renders the same objects as the plain manifests (but the
// Namespace, which Helm's --namespace makes), with the same container
// arguments and privileges; and helm lint passes.
func TestHelmChartRendersTheManifests(t *testing.T) {
	helm := testtools.Path(t, testtools.Helm)
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(helm, args...)
		cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	run("lint", "--strict", "helm/coffer")
	rendered := decodeAll(t, run("template", "coffer", "helm/coffer", "--namespace", "coffer-system"))
	plain := manifests(t)
	var want, got []string
	for _, o := range plain {
		if o.str("kind") != "Namespace" {
			want = append(want, o.key())
		}
	}
	for _, o := range rendered {
		got = append(got, o.key())
	}
	sort.Strings(want)
	sort.Strings(got)
	if !slices.Equal(want, got) {
		t.Fatalf("chart objects %v, manifests %v", got, want)
	}
	for _, key := range []string{"DaemonSet/coffer-agent", "StatefulSet/coffer-server"} {
		a, b := container(t, find(t, plain, key)), container(t, find(t, rendered, key))
		if !slices.Equal(strs(a.get("args")), strs(b.get("args"))) {
			t.Errorf("%s args: manifest %v, chart %v", key, a.get("args"), b.get("args"))
		}
		ya, _ := yaml.Marshal(a.get("securityContext"))
		yb, _ := yaml.Marshal(b.get("securityContext"))
		if !bytes.Equal(ya, yb) {
			t.Errorf("%s securityContext:\nmanifest %s\nchart %s", key, ya, yb)
		}
	}
	// NRI off in values: no NRI mount, --nri-socket empty.
	off := decodeAll(t, run("template", "coffer", "helm/coffer", "--namespace", "x", "--set", "agent.nriDir="))
	args := strings.Join(strs(container(t, find(t, off, "DaemonSet/coffer-agent")).get("args")), " ")
	if !strings.Contains(args, "--nri-socket= ") || !strings.Contains(args, "--server=coffer-server.x.svc:7443") {
		t.Errorf("values not applied: %s", args)
	}
}
