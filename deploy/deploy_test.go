// Package deploy holds the Kubernetes manifests and the Helm chart of
// Coffer; its test checks them (kubernetes/*.yaml parsed, the agent's
// privileges pinned, and the chart rendering the same objects with Helm).
package deploy

import (
	"bytes"
	"encoding/json"
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
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

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
	if got := rbacRules(role); !slices.Equal(got, []string{"/pods:get,list,watch", "authentication.k8s.io/tokenreviews:create"}) {
		t.Errorf("the server's RBAC must be read-only on pods plus creating TokenReviews: %v", got)
	}
	checkAttestation(t, ds, ss)
}

// rbacRules lists a role's rules as group/resource:verbs, sorted.
func rbacRules(role obj) []string {
	var out []string
	for _, r := range role.get("rules").([]any) {
		m, _ := asMap(r)
		for _, g := range strs(m["apiGroups"]) {
			for _, res := range strs(m["resources"]) {
				out = append(out, g+"/"+res+":"+strings.Join(strs(m["verbs"]), ","))
			}
		}
	}
	sort.Strings(out)
	return out
}

// checkAttestation: every node's agent enrolls with its pod's projected
// token, for audience coffer, short-lived, mounted read-only where
// --k8s-token-file reads it; no join token, no API-server token, no --name
// (the server names the agent after its node); the server attests the
// agents' ServiceAccount through the in-cluster API.
func checkAttestation(t *testing.T, ds, ss obj) {
	t.Helper()
	c := container(t, ds)
	args := strs(c.get("args"))
	if !slices.Contains(args, "--k8s-token-file=/var/run/secrets/coffer/token") {
		t.Errorf("agent args lack --k8s-token-file: %v", args)
	}
	for _, a := range args {
		if strings.HasPrefix(a, "--name=") || strings.HasPrefix(a, "--join-token") {
			t.Errorf("agent arg %s: an attested agent is named by the server and needs no join token", a)
		}
	}
	if env, _ := c.get("env").([]any); env != nil {
		for _, e := range env {
			m, _ := asMap(e)
			if m["name"] == "COFFER_JOIN_TOKEN" {
				t.Error("the agent still reads a join token Secret")
			}
		}
	}
	var vol obj
	for _, v := range ds.get("spec", "template", "spec", "volumes").([]any) {
		m, _ := asMap(v)
		if m["name"] == "coffer-token" {
			vol = obj(m)
		}
	}
	if vol == nil {
		t.Fatal("no coffer-token volume")
	}
	srcs, _ := vol.get("projected", "sources").([]any)
	if len(srcs) != 1 {
		t.Fatalf("coffer-token sources: %v", srcs)
	}
	m, _ := asMap(srcs[0])
	sat := obj(m)
	exp, _ := sat.get("serviceAccountToken", "expirationSeconds").(int)
	if sat.str("serviceAccountToken", "audience") != "coffer" || sat.str("serviceAccountToken", "path") != "token" || exp < 600 || exp > 3600 {
		t.Errorf("projected token %v: want audience coffer, path token, 600 to 3600 s", sat)
	}
	mounted := false
	for _, vm := range c.get("volumeMounts").([]any) {
		m, _ := asMap(vm)
		if m["name"] == "coffer-token" {
			mounted = m["mountPath"] == "/var/run/secrets/coffer" && m["readOnly"] == true
		}
	}
	if !mounted {
		t.Error("coffer-token is not mounted read-only at /var/run/secrets/coffer")
	}
	sa := ds.str("metadata", "namespace") + "/" + ds.str("spec", "template", "spec", "serviceAccountName")
	sargs := strs(container(t, ss).get("args"))
	if !slices.Contains(sargs, "--kubeconfig=in-cluster") || !slices.Contains(sargs, "--k8s-agent-service-accounts="+sa) {
		t.Errorf("server args %v: want --kubeconfig=in-cluster and --k8s-agent-service-accounts=%s", sargs, sa)
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
		for _, field := range []string{"securityContext", "env", "volumeMounts"} {
			ya, _ := yaml.Marshal(a.get(field))
			yb, _ := yaml.Marshal(b.get(field))
			if !bytes.Equal(ya, yb) {
				t.Errorf("%s %s:\nmanifest %s\nchart %s", key, field, ya, yb)
			}
		}
	}
	ya, _ := yaml.Marshal(find(t, plain, "DaemonSet/coffer-agent").get("spec", "template", "spec", "volumes"))
	yb, _ := yaml.Marshal(find(t, rendered, "DaemonSet/coffer-agent").get("spec", "template", "spec", "volumes"))
	if !bytes.Equal(ya, yb) {
		t.Errorf("agent volumes:\nmanifest %s\nchart %s", ya, yb)
	}
	if a, b := rbacRules(find(t, plain, "ClusterRole/coffer-server")), rbacRules(find(t, rendered, "ClusterRole/coffer-server")); !slices.Equal(a, b) {
		t.Errorf("server RBAC: manifest %v, chart %v", a, b)
	}
	checkAttestation(t, find(t, rendered, "DaemonSet/coffer-agent"), find(t, rendered, "StatefulSet/coffer-server"))
	// Attestation off: a join token per node again, no projected token, no
	// TokenReviews for the server.
	noAtt := decodeAll(t, run("template", "coffer", "helm/coffer", "--namespace", "coffer-system", "--set", "attestation.enabled=false"))
	ac := container(t, find(t, noAtt, "DaemonSet/coffer-agent"))
	aargs := strings.Join(strs(ac.get("args")), " ")
	envs, _ := yaml.Marshal(ac.get("env"))
	if strings.Contains(aargs, "--k8s-token-file") || !strings.Contains(aargs, "--name=$(NODE_NAME)") || !strings.Contains(string(envs), "COFFER_JOIN_TOKEN") {
		t.Errorf("attestation off: agent args %s, env %s", aargs, envs)
	}
	if got := rbacRules(find(t, noAtt, "ClusterRole/coffer-server")); !slices.Equal(got, []string{"/pods:get,list,watch"}) {
		t.Errorf("attestation off: server RBAC %v", got)
	}
	if sargs := strings.Join(strs(container(t, find(t, noAtt, "StatefulSet/coffer-server")).get("args")), " "); strings.Contains(sargs, "--k8s-agent") {
		t.Errorf("attestation off: server args %s", sargs)
	}
	// Labels and scope reach the server's flags.
	lab := decodeAll(t, run("template", "coffer", "helm/coffer", "--namespace", "x", "--set", "attestation.agentLabels.zone=eu,attestation.agentLabels.cluster=prod,attestation.agentScope=shop/*"))
	sargs := strs(container(t, find(t, lab, "StatefulSet/coffer-server")).get("args"))
	for _, want := range []string{"--k8s-agent-service-accounts=x/coffer-agent", "--k8s-agent-labels=cluster=prod,zone=eu", "--k8s-agent-scope=shop/*"} {
		if !slices.Contains(sargs, want) {
			t.Errorf("server args %v lack %s", sargs, want)
		}
	}
	// NRI off in values: no NRI mount, --nri-socket empty.
	off := decodeAll(t, run("template", "coffer", "helm/coffer", "--namespace", "x", "--set", "agent.nriDir="))
	args := strings.Join(strs(container(t, find(t, off, "DaemonSet/coffer-agent")).get("args")), " ")
	if !strings.Contains(args, "--nri-socket= ") || !strings.Contains(args, "--server=coffer-server.x.svc:7443") {
		t.Errorf("values not applied: %s", args)
	}
}

// TestManifestsDecodeStrictly: every object decodes into its Kubernetes
// type with no unknown field (a misspelt key would be dropped by the API
// server, e.g. a projected token without its audience).
func TestManifestsDecodeStrictly(t *testing.T) {
	files, _ := filepath.Glob("kubernetes/*.yaml")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range bytes.Split(b, []byte("\n---\n")) {
			var m map[string]any
			if err := yaml.Unmarshal(doc, &m); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			js, err := json.Marshal(m)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			kind, _ := m["kind"].(string)
			var into any
			switch kind {
			case "Namespace":
				into = &corev1.Namespace{}
			case "ServiceAccount":
				into = &corev1.ServiceAccount{}
			case "Service":
				into = &corev1.Service{}
			case "DaemonSet":
				into = &appsv1.DaemonSet{}
			case "StatefulSet":
				into = &appsv1.StatefulSet{}
			case "ClusterRole":
				into = &rbacv1.ClusterRole{}
			case "ClusterRoleBinding":
				into = &rbacv1.ClusterRoleBinding{}
			default:
				t.Fatalf("%s: kind %q not checked", f, kind)
			}
			dec := json.NewDecoder(bytes.NewReader(js))
			dec.DisallowUnknownFields()
			if err := dec.Decode(into); err != nil {
				t.Errorf("%s %s: %v", f, kind, err)
			}
		}
	}
}
