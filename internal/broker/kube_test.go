package broker

import (
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/audit"
)

// fakePods is the API server's pod index.
type fakePods struct {
	mu   sync.Mutex
	pods map[string]Pod
}

func (f *fakePods) Pod(uid string) (Pod, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pods[uid]
	return p, ok
}

// set puts (or with a zero Pod, deletes) a pod and tells the broker, as
// the index does.
func (f *fakePods) set(b *Broker, uid string, p *Pod) {
	f.mu.Lock()
	if p == nil {
		delete(f.pods, uid)
	} else {
		f.pods[uid] = *p
	}
	f.mu.Unlock()
	b.PodChanged(uid)
}

func kubeRig(t *testing.T, pods *fakePods, setup func(*Broker)) *rig {
	return newRig(t, func(c *Config) {
		if pods != nil {
			c.Pods = pods
		}
		c.PodGrace = 100 * time.Millisecond
	}, setup)
}

// podCtr is a node agent's report of container name of pod ns/pod (uid).
func podCtr(id, uid, ns, pod, name string, labels map[string]string) *cofferv1.Container {
	c := ctrInfo(id, labels)
	c.Name = ns + "/" + pod + "/" + name
	c.Pod = &cofferv1.Pod{Uid: uid, Namespace: ns, Name: pod, Container: name}
	return c
}

var nodeA = map[string]string{LabelNode: "node-a"}

// A hostile node agent (node-a's key) reports a pod of another node, its
// own pod with forged labels, namespace and ServiceAccount, an invented
// pod, and a real pod of its node: only the real one gets anything, with
// the API server's labels; the others are refused and recorded, or held.
func TestNodeAgentGetsOnlyThePodsOfItsNode(t *testing.T) {
	pods := &fakePods{pods: map[string]Pod{
		"uid-web": {UID: "uid-web", Namespace: "shop", Name: "web-1", Node: "node-a", ServiceAccount: "web-sa",
			Labels: map[string]string{"app": "web", "k8s.namespace": "evil"}, Containers: []string{"istio", "web"}},
		"uid-b": {UID: "uid-b", Namespace: "shop", Name: "web-2", Node: "node-b", ServiceAccount: "web-sa",
			Labels: map[string]string{"app": "web"}, Containers: []string{"web"}},
		"uid-dev": {UID: "uid-dev", Namespace: "dev", Name: "tool", Node: "node-a", ServiceAccount: "default",
			Labels: map[string]string{"app": "tool"}, Containers: []string{"tool"}},
		"uid-big": {UID: "uid-big", Namespace: "shop", Name: "big", Node: "node-a", Oversize: true},
	}}
	r := kubeRig(t, pods, nil)
	r.put("shop/db", []byte("db-value"))
	r.put("shop/sa", []byte("sa-value"))
	r.bind(binding("web", "shop/db", "app=web"))
	r.bind(binding("sa", "shop/sa", "k8s.serviceaccount=web-sa,k8s.namespace=shop"))
	a := r.dial(r.enroll("node-a", nodeA, ""))

	forged := map[string]string{"app": "web", LabelNamespace: "shop", LabelServiceAccount: "web-sa", LabelPod: "web-1"}
	a.report(podCtr("c-b", "uid-b", "shop", "web-2", "web", forged))          // (a) a pod of node-b
	a.report(podCtr("c-dev", "uid-dev", "dev", "tool", "tool", forged))       // (b) its own pod, forged labels
	a.report(podCtr("c-ns", "uid-dev", "shop", "web-1", "tool", forged))      // (b) its own pod, forged namespace and name
	a.report(podCtr("c-invent", "uid-invented", "shop", "web-9", "web", web)) // (c) an invented uid
	a.report(podCtr("c-side", "uid-web", "shop", "web-1", "sidecar", forged)) // a container the pod has not
	a.report(podCtr("c-big", "uid-big", "shop", "big", "web", forged))        // a pod beyond the bounds
	noPod := ctrInfo("c-nopod", forged)                                       // no pod at all
	a.report(noPod)
	a.report(podCtr("c-web", "uid-web", "shop", "web-1", "web", map[string]string{"app": "db"})) // (d) real
	a.waitFiles("c-web", "db=shop/db@1,sa=shop/sa@1")
	for _, id := range []string{"c-b", "c-dev", "c-ns", "c-side", "c-big", "c-nopod"} {
		a.waitFiles(id, "")
	}
	if fs, ok := a.files("c-invent"); ok {
		t.Fatalf("a container of an unknown pod was sent a state: %v", fs)
	}
	r.b.mu.Lock()
	got := r.b.containers["c-web"].info.Labels
	r.b.mu.Unlock()
	want := map[string]string{"app": "web", LabelNamespace: "shop", LabelPod: "web-1", LabelContainer: "web", LabelServiceAccount: "web-sa"}
	if !maps.Equal(got, want) {
		t.Fatalf("selectors saw %v, want the API server's %v", got, want)
	}

	refused := map[string]string{
		"c-b": ReasonPodNotOnNode, "c-dev": "", "c-ns": ReasonPodMismatch, "c-side": ReasonPodContainer,
		"c-big": ReasonPodOversize, "c-nopod": ReasonPodMissing, "c-invent": ReasonPodUnknown,
	}
	for id, reason := range refused {
		if reason == "" {
			continue // a real pod of the node: its own labels match nothing; no anomaly
		}
		ev := r.waitAudit("agent.anomaly", 1, func(e audit.Event) bool { return e.Details["container_id"] == id })
		if ev[0].Details["reason"] != reason || ev[0].Actor != "agent:node-a" {
			t.Errorf("%s: anomaly %+v, want reason %s", id, ev[0].Details, reason)
		}
	}
	if n := len(r.aud.find("agent.anomaly", func(e audit.Event) bool { return e.Details["container_id"] == "c-dev" })); n != 0 {
		t.Errorf("%d anomalies for a real pod that matches nothing", n)
	}
	if an := r.b.Anomalies()["node-a"]; an.PodRefusals != 6 {
		t.Errorf("node-a anomalies = %+v, want 6 pod refusals", an)
	}
	if got := a.received(); len(got) != 2 {
		t.Errorf("node-a received %v", got)
	}
	ev := r.waitAudit("delivery.send", 2, nil)
	for _, e := range ev {
		if d := e.Details; d["container_id"] != "c-web" || d["namespace"] != "shop" || d["pod"] != "web-1" || d["serviceaccount"] != "web-sa" ||
			d["container"] != "shop/web-1/web" {
			t.Errorf("delivery record %+v", d)
		}
	}
	// Reported again, nothing new is recorded.
	a.report(podCtr("c-b", "uid-b", "shop", "web-2", "web", forged))
	a.report(podCtr("c-web", "uid-web", "shop", "web-1", "web", nil))
	a.waitFiles("c-web", "db=shop/db@1,sa=shop/sa@1")
	if an := r.b.Anomalies()["node-a"]; an.PodRefusals != 6 {
		t.Errorf("after reports again: %+v", an)
	}
	noValueIn(t, r.aud, []byte("db-value"), []byte("sa-value"))
}

// A pod the API server does not have yet is held (no state at all), and
// gets its files once the index learns of it; its labels follow the API
// server's; a deletion revokes, as does a rebinding to another node.
func TestNodeAgentPodLifecycle(t *testing.T) {
	pods := &fakePods{pods: map[string]Pod{}}
	r := kubeRig(t, pods, nil)
	r.put("shop/db", []byte("db-value"))
	r.bind(binding("web", "shop/db", "app=web"))
	a := r.dial(r.enroll("node-a", nodeA, ""))
	a.report(podCtr("c1", "uid-1", "shop", "web-1", "web", web))
	a.report(podCtr("probe", "uid-2", "shop", "other", "web", nil)) // the stream's order: c1 was handled before
	time.Sleep(20 * time.Millisecond)
	if fs, ok := a.files("c1"); ok {
		t.Fatalf("held container was sent %v", fs)
	}
	p := Pod{UID: "uid-1", Namespace: "shop", Name: "web-1", Node: "node-a", ServiceAccount: "default",
		Labels: map[string]string{"app": "web"}, Containers: []string{"web"}}
	pods.set(r.b, "uid-1", &p)
	a.waitFiles("c1", "db=shop/db@1")
	a.ack("c1", a.generation("c1"))

	// Relabelled in the API server: the binding no longer matches.
	p.Labels = map[string]string{"app": "api"}
	pods.set(r.b, "uid-1", &p)
	a.waitFiles("c1", "")
	p.Labels = map[string]string{"app": "web"}
	pods.set(r.b, "uid-1", &p)
	a.waitFiles("c1", "db=shop/db@1")

	// Deleted: revoked, and nothing comes back on a new version.
	pods.set(r.b, "uid-1", nil)
	a.waitFiles("c1", "")
	r.put("shop/db", []byte("db-value-2"))
	time.Sleep(20 * time.Millisecond)
	a.waitFiles("c1", "")

	// Another pod, rebound (uid reused) on node-b: revoked and recorded.
	q := Pod{UID: "uid-3", Namespace: "shop", Name: "web-3", Node: "node-a", Labels: map[string]string{"app": "web"}, Containers: []string{"web"}}
	pods.set(r.b, "uid-3", &q)
	a.report(podCtr("c3", "uid-3", "shop", "web-3", "web", nil))
	a.waitFiles("c3", "db=shop/db@2")
	q.Node = "node-b"
	pods.set(r.b, "uid-3", &q)
	a.waitFiles("c3", "")
	r.waitAudit("agent.anomaly", 1, func(e audit.Event) bool {
		return e.Details["container_id"] == "c3" && e.Details["reason"] == ReasonPodNotOnNode && e.Details["pod_node"] == "node-b"
	})
	if got := a.received(); len(got) != 2 {
		t.Errorf("received %v", got)
	}
	// A stopped container is forgotten: a pod event for it changes nothing.
	a.stop("c3")
	a.report(podCtr("probe2", "uid-2", "shop", "other", "web", nil))
	time.Sleep(20 * time.Millisecond)
	pods.set(r.b, "uid-3", nil)
	r.b.mu.Lock()
	n := len(r.b.byPod)
	r.b.mu.Unlock()
	if n != 2 { // c1 (uid-1) and the probes (uid-2)
		t.Errorf("%d pods indexed, want 2", n)
	}
	noValueIn(t, r.aud, []byte("db-value"))
}

// An agent that is no Kubernetes node (no k8s.node label) cannot claim a
// namespace, a pod or a ServiceAccount: its containers' k8s.* labels are
// dropped before matching, with or without a verifier.
func TestDockerHostCannotClaimKubernetesIdentity(t *testing.T) {
	for _, verifier := range []bool{false, true} {
		var pods *fakePods
		if verifier {
			pods = &fakePods{pods: map[string]Pod{}}
		}
		r := kubeRig(t, pods, nil)
		r.put("shop/db", []byte("db-value"))
		r.put("app/plain", []byte("plain-value"))
		r.bind(binding("shop", "shop/db", "app=web,k8s.namespace=shop"))
		r.bind(binding("sa", "shop/db", "k8s.serviceaccount=web-sa"))
		r.bind(binding("plain", "app/plain", "app=web"))
		d := r.dial(r.enroll("docker-1", map[string]string{"env": "prod"}, ""))
		d.report(podCtr("c1", "uid-x", "shop", "web-1", "web", map[string]string{
			"app": "web", LabelNamespace: "shop", LabelServiceAccount: "web-sa", "k8s.anything": "1"}))
		d.waitFiles("c1", "plain=app/plain@1")
		if got := d.received(); len(got) != 1 {
			t.Errorf("verifier %v: docker host received %v", verifier, got)
		}
		if n := len(r.aud.find("agent.anomaly", nil)); n != 0 {
			t.Errorf("verifier %v: %d anomalies", verifier, n)
		}
		ev := r.waitAudit("delivery.send", 1, nil)
		if _, ok := ev[0].Details["namespace"]; ok {
			t.Errorf("verifier %v: a Docker host's claimed namespace is in the delivery record: %v", verifier, ev[0].Details)
		}
	}
}

// Without a verifier (no kubeconfig), a node agent's containers are
// matched on what it reports, as before, but for a ServiceAccount.
func TestNodeAgentWithoutVerifierIsTrusted(t *testing.T) {
	r := kubeRig(t, nil, nil)
	r.put("shop/db", []byte("db-value"))
	r.put("shop/sa", []byte("sa-value"))
	r.bind(binding("shop", "shop/db", "app=web,k8s.namespace=shop"))
	r.bind(binding("sa", "shop/sa", "k8s.serviceaccount=web-sa"))
	a := r.dial(r.enroll("node-a", nodeA, ""))
	a.report(podCtr("c1", "uid-x", "shop", "web-1", "web", map[string]string{"app": "web", LabelNamespace: "shop", LabelPod: "web-1",
		LabelServiceAccount: "web-sa"}))
	a.waitFiles("c1", "db=shop/db@1") // not the ServiceAccount's: only the API server can tell it
	ev := r.waitAudit("delivery.send", 1, nil)
	if d := ev[0].Details; d["namespace"] != "shop" || d["pod"] != "web-1" {
		t.Errorf("delivery record %v", d)
	}
}

// A binding whose selector matches a container without labels (`!x`)
// gives nothing to a container whose pod is held or refused: what it gets
// does not hang on its labels being empty.
func TestWithheldContainerMatchesNoBinding(t *testing.T) {
	pods := &fakePods{pods: map[string]Pod{
		"uid-b": {UID: "uid-b", Namespace: "shop", Name: "web-2", Node: "node-b", Labels: map[string]string{}, Containers: []string{"web"}},
		"uid-a": {UID: "uid-a", Namespace: "shop", Name: "web-1", Node: "node-a", Labels: map[string]string{}, Containers: []string{"web"}},
	}}
	r := kubeRig(t, pods, nil)
	r.put("any/thing", []byte("any-value"))
	r.bind(binding("any", "any/thing", "!nothere"))
	a := r.dial(r.enroll("node-a", nodeA, ""))
	a.report(podCtr("held", "uid-none", "shop", "web-9", "web", nil))
	a.report(podCtr("refused", "uid-b", "shop", "web-2", "web", nil))
	a.report(podCtr("real", "uid-a", "shop", "web-1", "web", nil))
	a.waitFiles("real", "thing=any/thing@1")
	a.waitFiles("refused", "")
	if fs, ok := a.files("held"); ok {
		t.Fatalf("held container was sent %v", fs)
	}
	// Also when the binding comes after the reports.
	r.bind(binding("any2", "any/thing", "!other"))
	r.put("any/thing", []byte("any-value-2"))
	a.waitFiles("real", "thing=any/thing@2")
	a.waitFiles("refused", "")
	if _, ok := a.files("held"); ok {
		t.Fatal("held container was sent a state")
	}
	next, err := r.cat.Bindings().With(binding("any3", "any/other", "!zzz"))
	if err != nil {
		t.Fatal(err)
	}
	effects := r.b.Preview(next)
	if len(effects) != 1 || effects[0].ContainerID != "real" {
		t.Errorf("preview lists %+v", effects)
	}
}

// FuzzAdmit: whatever a node agent reports (any labels, any pod fields,
// unicode or not), what selectors see of its container is the API
// server's pod exactly, or nothing; and a Docker host's container never
// carries a k8s.* label.
func FuzzAdmit(f *testing.F) {
	f.Add("uid-a", "shop", "web-1", "web", "k8s.namespace", "shop", true)
	f.Add("uid-a", "shöp", "wéb-1", "☃", "app", "web", false)
	f.Add("", "", "", "", "k8s.", "", true)
	apiPod := Pod{UID: "uid-a", Namespace: "shop", Name: "web-1", Node: "node-a", ServiceAccount: "web-sa",
		Labels: map[string]string{"app": "web"}, Containers: []string{"web"}}
	want := map[string]string{"app": "web", LabelNamespace: "shop", LabelPod: "web-1", LabelContainer: "web", LabelServiceAccount: "web-sa"}
	b := New(Config{Catalog: &fakeCatalog{}, Pods: &fakePods{pods: map[string]Pod{"uid-a": apiPod}}, PodGrace: time.Hour})
	f.Fuzz(func(t *testing.T, uid, ns, name, container, k, v string, node bool) {
		labels := map[string]string{}
		if node {
			labels[LabelNode] = "node-a"
		}
		h := &host{name: "a", labels: labels, containers: map[string]*ctr{}}
		c := &ctr{agent: "a", host: h}
		claim := &cofferv1.Container{Id: "c", Labels: map[string]string{k: v, LabelServiceAccount: v},
			Pod: &cofferv1.Pod{Uid: uid, Namespace: ns, Name: name, Container: container}}
		b.mu.Lock()
		b.admitLocked(c, claim)
		b.unpodLocked(c)
		b.mu.Unlock()
		got := c.info.Labels
		switch {
		case !node:
			for key := range got {
				if strings.HasPrefix(key, kubePrefix) {
					t.Fatalf("a Docker host's container carries %q", key)
				}
			}
		case c.withheld():
			if len(got) != 0 {
				t.Fatalf("a withheld container carries labels %v", got)
			}
		default:
			if uid != "uid-a" || ns != "shop" || name != "web-1" || container != "web" || !maps.Equal(got, want) {
				t.Fatalf("report %q %q %q %q admitted with labels %v", uid, ns, name, container, got)
			}
		}
	})
}
