package broker

import (
	"maps"
	"slices"
	"strings"
	"time"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/audit"
)

// Need to know on Kubernetes, the way the API server's Node authorizer
// does it: an agent whose host label LabelNode names a node (set by an
// admin at enrollment, or by the server's Kubernetes attestation) is a
// node agent, and with a PodVerifier (the server's --kubeconfig) each
// container it reports gets anything only if the API server has a pod of
// that uid bound to that very node, with the namespace and name the agent
// reported and a container of that name. Selectors then see the API
// server's pod labels plus the reserved keys (k8s.namespace, k8s.pod,
// k8s.container, k8s.serviceaccount), never what the agent claimed. A
// node's root can then get only the secrets of pods actually scheduled on
// its node.
//
//   - a pod the API server does not (yet) have is held: nothing is sent,
//     not even an empty state (a pod that requires its secrets does not
//     start without them), and the container is checked again when the
//     verifier learns of the pod; still held after Config.PodGrace, it is
//     recorded (ReasonPodUnknown);
//   - a pod deleted, or found on another node, revokes what was sent;
//   - a report that does not match the API server's pod is refused,
//     counted and audited (agent.anomaly with one of the Reason* below),
//     with names only, never a value.
//
// An agent without LabelNode is no Kubernetes node: the k8s.* labels its
// containers claim are dropped before matching (a Docker host cannot claim
// a namespace or a ServiceAccount). Without a PodVerifier, a node agent's
// containers are matched on what the agent reports (documented: without
// --kubeconfig, a node's root can invent pods), less k8s.serviceaccount,
// which only the API server can tell.

// Label keys of the Kubernetes identity.
const (
	LabelNode           = "k8s.node" // host label: the agent's Kubernetes node
	LabelNamespace      = "k8s.namespace"
	LabelPod            = "k8s.pod"
	LabelContainer      = "k8s.container"
	LabelServiceAccount = "k8s.serviceaccount"

	kubePrefix = "k8s." // reserved for the Kubernetes identity
)

// DefaultPodGrace is how long a node agent's container may wait for its pod
// to appear in the API server's index before the wait is recorded.
const DefaultPodGrace = 30 * time.Second

// Reasons of the refusals of a node agent's container reports.
const (
	ReasonPodNotOnNode = "pod_not_on_node"       // the API server binds the pod to another node
	ReasonPodMismatch  = "pod_identity_mismatch" // the pod's namespace or name is not what the agent said
	ReasonPodContainer = "pod_container_unknown" // the pod has no container of that name
	ReasonPodMissing   = "pod_missing"           // the report names no pod uid
	ReasonPodOversize  = "pod_too_large"         // the pod is beyond the bounds the verifier keeps
	ReasonPodUnknown   = "pod_unknown"           // no pod with that uid within PodGrace (held, not refused)
)

const (
	podStateOK podState = iota
	podStateHeld
	podStateRefused

	anomalyResultHeld    = "held"
	anomalyResultRefused = audit.ResultDenied
)

type podState uint8

// Pod is the API server's record of a pod bound to a node.
type Pod struct {
	UID, Namespace, Name string
	Node                 string
	ServiceAccount       string
	Labels               map[string]string // read-only
	Containers           []string          // sorted
	Oversize             bool              // beyond the verifier's bounds: its containers get nothing
}

// PodVerifier is the API server's view of the pods bound to nodes (the
// server's pod index, internal/kube). It tells the broker of changes by
// calling Broker.PodChanged.
type PodVerifier interface {
	Pod(uid string) (Pod, bool)
}

// kubeCtr is a container's Kubernetes state in the broker.
type kubeCtr struct {
	state   podState
	uid     string              // indexed in Broker.byPod under this uid ("" if not)
	reason  string              // the refusal last recorded (not recorded again while it stands)
	overdue *time.Timer         // while held
	claim   *cofferv1.Container // the agent's report, as it sent it
}

// withheld reports whether c may be given nothing at all (its pod is not
// confirmed).
func (c *ctr) withheld() bool { return c.kube.state != podStateOK }

// admitLocked sets c's report: what selectors see of it (c.info) and its
// Kubernetes state, from the agent's report and, for a node agent, the
// API server's pod. It records a new refusal.
func (b *Broker) admitLocked(c *ctr, claim *cofferv1.Container) {
	c.kube.claim = claim
	node, isNode := c.host.labels[LabelNode]
	if !isNode {
		b.podIndexLocked(c, "")
		c.kube.state = podStateOK
		c.info = withoutKubeLabels(claim)
		return
	}
	if b.cfg.Pods == nil {
		// The agent's word, as before; but only the API server can tell a
		// ServiceAccount (the runtime never knows it).
		b.podIndexLocked(c, "")
		c.kube.state = podStateOK
		c.info = claim
		if _, ok := claim.GetLabels()[LabelServiceAccount]; ok {
			c.info = shallow(claim)
			c.info.Labels = maps.Clone(claim.Labels)
			delete(c.info.Labels, LabelServiceAccount)
		}
		return
	}
	ref := claim.GetPod()
	b.podIndexLocked(c, ref.GetUid())
	if ref.GetUid() == "" {
		b.refuseLocked(c, ReasonPodMissing, nil)
		return
	}
	p, ok := b.cfg.Pods.Pod(ref.GetUid())
	switch {
	case !ok:
		b.holdLocked(c)
		return
	case p.Node != node:
		b.refuseLocked(c, ReasonPodNotOnNode, map[string]string{"node": node, "pod_node": p.Node})
		return
	case p.Namespace != ref.GetNamespace() || p.Name != ref.GetName():
		b.refuseLocked(c, ReasonPodMismatch, map[string]string{"pod_namespace": p.Namespace, "pod_name": p.Name})
		return
	case p.Oversize:
		b.refuseLocked(c, ReasonPodOversize, nil)
		return
	case !slices.Contains(p.Containers, ref.GetContainer()):
		b.refuseLocked(c, ReasonPodContainer, nil)
		return
	}
	b.stopOverdue(c)
	c.kube.state, c.kube.reason = podStateOK, ""
	labels := make(map[string]string, len(p.Labels)+4)
	for k, v := range p.Labels {
		if !strings.HasPrefix(k, kubePrefix) {
			labels[k] = v
		}
	}
	labels[LabelNamespace] = p.Namespace
	labels[LabelPod] = p.Name
	labels[LabelContainer] = ref.GetContainer()
	labels[LabelServiceAccount] = p.ServiceAccount
	info := shallow(claim)
	info.Labels = labels
	info.Name = p.Namespace + "/" + p.Name + "/" + ref.GetContainer()
	c.info = info
}

// holdLocked gives c nothing until its pod is known.
func (b *Broker) holdLocked(c *ctr) {
	c.kube.state = podStateHeld
	c.info = withoutLabels(c.kube.claim)
	if c.kube.overdue != nil || c.kube.reason == ReasonPodUnknown {
		return
	}
	c.kube.overdue = time.AfterFunc(b.podGrace(), func() { b.podOverdue(c) })
}

// podOverdue records that c's pod is still unknown after the grace time.
func (b *Broker) podOverdue(c *ctr) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.kube.overdue == nil || c.kube.state != podStateHeld || b.containers[c.info.Id] != c {
		return
	}
	c.kube.overdue = nil
	b.recordLocked(c, ReasonPodUnknown, anomalyResultHeld, nil)
}

// refuseLocked gives c nothing (and revokes what it had) for reason.
func (b *Broker) refuseLocked(c *ctr, reason string, details map[string]string) {
	b.stopOverdue(c)
	c.kube.state = podStateRefused
	c.info = withoutLabels(c.kube.claim)
	if c.kube.reason == reason {
		return // recorded already
	}
	b.recordLocked(c, reason, anomalyResultRefused, details)
}

// recordLocked counts, logs and audits an anomaly of c's agent.
func (b *Broker) recordLocked(c *ctr, reason, result string, details map[string]string) {
	c.kube.reason = reason
	h := c.host
	h.anomalies.PodRefusals++
	h.anomalies.LastAnomaly, h.anomalies.LastAnomalyReason = time.Now().UTC(), reason
	claim := c.kube.claim
	d := map[string]string{
		"container_id": clip(claim.GetId()), "container": clip(claim.GetName()),
		"pod_uid": clip(claim.GetPod().GetUid()), "namespace": clip(claim.GetPod().GetNamespace()),
		"pod": clip(claim.GetPod().GetName()), "k8s_container": clip(claim.GetPod().GetContainer()),
		"node": clip(h.labels[LabelNode]),
	}
	for k, v := range details {
		d[k] = clip(v)
	}
	b.queueAudit("agent:"+c.agent, anomalyEvent(c.agent, reason, result, d))
	b.log.Warn("a node agent reported a container the API server does not confirm; it gets nothing", "agent", c.agent,
		"reason", reason, "id", d["container_id"], "pod_uid", d["pod_uid"], "namespace", d["namespace"], "pod", d["pod"])
}

func (b *Broker) stopOverdue(c *ctr) {
	if c.kube.overdue != nil {
		c.kube.overdue.Stop()
		c.kube.overdue = nil
	}
}

func (b *Broker) podGrace() time.Duration {
	if b.cfg.PodGrace > 0 {
		return b.cfg.PodGrace
	}
	return DefaultPodGrace
}

// podIndexLocked files c under pod uid ("" for none).
func (b *Broker) podIndexLocked(c *ctr, uid string) {
	if c.kube.uid == uid {
		return
	}
	if m := b.byPod[c.kube.uid]; m != nil {
		delete(m, c)
		if len(m) == 0 {
			delete(b.byPod, c.kube.uid)
		}
	}
	c.kube.uid = uid
	if uid == "" {
		return
	}
	m := b.byPod[uid]
	if m == nil {
		m = map[*ctr]struct{}{}
		b.byPod[uid] = m
	}
	m[c] = struct{}{}
}

// unpodLocked forgets c's Kubernetes state (c is dropped).
func (b *Broker) unpodLocked(c *ctr) {
	b.stopOverdue(c)
	b.podIndexLocked(c, "")
}

// PodChanged is the pod verifier's notification: the API server's pod uid
// appeared, changed or went. Every container reported for it is checked
// again, and gets, keeps or loses its files accordingly.
func (b *Broker) PodChanged(uid string) {
	b.mu.Lock()
	if len(b.byPod[uid]) == 0 {
		b.mu.Unlock()
		return
	}
	set := b.cfg.Catalog.Bindings()
	for c := range b.byPod[uid] {
		b.admitLocked(c, c.kube.claim)
		b.regrant(c, set)
		b.push(c)
	}
	b.mu.Unlock()
	b.backpressure()
}

// withoutKubeLabels is info without the labels of the reserved prefix
// (info itself when it has none).
func withoutKubeLabels(info *cofferv1.Container) *cofferv1.Container {
	has := false
	for k := range info.GetLabels() {
		if strings.HasPrefix(k, kubePrefix) {
			has = true
			break
		}
	}
	if !has {
		return info
	}
	out := shallow(info)
	out.Labels = maps.Clone(info.Labels)
	maps.DeleteFunc(out.Labels, func(k, _ string) bool { return strings.HasPrefix(k, kubePrefix) })
	return out
}

// withoutLabels is info with no labels (a container that gets nothing:
// nothing of what it claims is kept where selectors could see it).
func withoutLabels(info *cofferv1.Container) *cofferv1.Container {
	out := shallow(info)
	out.Labels = map[string]string{}
	out.ImageLabels = map[string]string{}
	return out
}

// shallow copies a report's fields (maps shared; never modified in place).
func shallow(c *cofferv1.Container) *cofferv1.Container {
	return &cofferv1.Container{Id: c.GetId(), Name: c.GetName(), Labels: c.GetLabels(), Image: c.GetImage(),
		ImageDigest: c.GetImageDigest(), ImageLabels: c.GetImageLabels(), Pod: c.GetPod()}
}
