package containerd

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"unicode/utf8"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"coffer/internal/container"
)

// Reserved label keys. Selectors see a pod's own labels as they are, plus
// these keys, which the runtime sets from the CRI's metadata of the pod
// sandbox and container. A pod label with one of these keys (a pod author
// may write `k8s.namespace: shop` into a pod of another namespace) is
// dropped: only the runtime decides them.
const (
	LabelNamespace = "k8s.namespace" // the pod's namespace
	LabelPod       = "k8s.pod"       // the pod's name
	LabelContainer = "k8s.container" // the container's name in the pod spec
	// LabelServiceAccount is not set by the runtime: the ServiceAccount is
	// in no CRI label or metadata. The server sets it from the API server's
	// pod (with --kubeconfig, see internal/broker/kube.go). A pod label
	// with this key is dropped all the same, so no pod can claim one.
	LabelServiceAccount = "k8s.serviceaccount"
)

// reserved are the keys a pod's labels may not carry into Info.Labels.
var reserved = map[string]bool{
	LabelNamespace: true, LabelPod: true, LabelContainer: true, LabelServiceAccount: true,
}

// Labels the kubelet and containerd's CRI add to a sandbox's labels, which
// are not the pod's: the pod's identity is taken from the sandbox metadata.
var kubeletSandboxLabels = map[string]bool{
	"io.kubernetes.pod.name":      true,
	"io.kubernetes.pod.namespace": true,
	"io.kubernetes.pod.uid":       true,
	"io.cri-containerd.kind":      true,
}

// Bounds on what one container may report. A pod's labels pass through the
// API server's validation on a real cluster, but anyone who can use the CRI
// socket can make a sandbox with any labels; a container beyond these
// bounds is skipped (logged), never reported cut short: a selector like
// `!tier` would match a label set with `tier` cut off.
const (
	MaxLabels      = 256      // pod labels, reserved keys included
	MaxLabelsBytes = 64 << 10 // keys and values together
	maxFieldBytes  = 1024     // a namespace, pod, container or image name
)

// errIdentity marks a container whose identity breaks the bounds above or
// is not valid UTF-8 (a gRPC string must be): it is skipped, with a
// warning, and the others are reported.
var errIdentity = errors.New("identity not reportable")

// pod is what the runtime knows of a pod sandbox. It never changes for a
// sandbox id (the CRI cannot relabel a sandbox).
type pod struct {
	namespace, name, uid string
	labels               map[string]string // the pod's own labels, without the kubelet's and reserved keys
}

// podOf reads a sandbox's identity.
func podOf(sb *runtimeapi.PodSandbox) (pod, error) {
	md := sb.GetMetadata()
	p := pod{namespace: md.GetNamespace(), name: md.GetName(), uid: md.GetUid(), labels: make(map[string]string, len(sb.GetLabels()))}
	for _, f := range []string{p.namespace, p.name, p.uid} {
		if err := checkField(f); err != nil {
			return pod{}, fmt.Errorf("%w: pod sandbox %s: %w", errIdentity, clip(sb.GetId()), err)
		}
	}
	if len(sb.GetLabels()) > MaxLabels {
		return pod{}, fmt.Errorf("%w: pod %s/%s has %d labels, at most %d", errIdentity, clip(p.namespace), clip(p.name), len(sb.GetLabels()), MaxLabels)
	}
	size := 0
	for k, v := range sb.GetLabels() {
		size += len(k) + len(v)
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return pod{}, fmt.Errorf("%w: pod %s/%s: a label is not valid UTF-8", errIdentity, clip(p.namespace), clip(p.name))
		}
		if kubeletSandboxLabels[k] || reserved[k] {
			continue
		}
		p.labels[k] = v
	}
	if size > MaxLabelsBytes {
		return pod{}, fmt.Errorf("%w: pod %s/%s: labels of %d bytes, at most %d", errIdentity, clip(p.namespace), clip(p.name), size, MaxLabelsBytes)
	}
	return p, nil
}

// labelsOf is what selectors see of a container in pod p: the pod's labels
// and the reserved keys.
func labelsOf(p pod, containerName string) map[string]string {
	ls := make(map[string]string, len(p.labels)+3)
	maps.Copy(ls, p.labels)
	ls[LabelNamespace] = p.namespace
	ls[LabelPod] = p.name
	ls[LabelContainer] = containerName
	return ls
}

// podRef is the pod of a container named containerName in pod p, for the
// server's check against the API server.
func podRef(p pod, containerName string) *container.Pod {
	return &container.Pod{UID: p.uid, Namespace: p.namespace, Name: p.name, Container: containerName}
}

// checkField bounds one name.
func checkField(s string) error {
	if len(s) > maxFieldBytes {
		return fmt.Errorf("a name of %d bytes, at most %d", len(s), maxFieldBytes)
	}
	if !utf8.ValidString(s) {
		return errors.New("a name is not valid UTF-8")
	}
	return nil
}

// clip shortens text taken from the runtime for a log line or an error.
func clip(s string) string {
	if len(s) > 128 {
		s = s[:128] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// imageDigest is the image id of a CRI container ("sha256:…", what Docker
// reports too); containerd's CRI puts the image id in ImageRef, other CRIs a
// repo digest (name@sha256:…), whose digest is taken.
func imageDigest(c *runtimeapi.Container) string {
	ref := c.GetImageRef()
	if i := strings.LastIndexByte(ref, '@'); i >= 0 {
		ref = ref[i+1:]
	}
	return ref
}

// podCache remembers sandboxes' identities by id. A sandbox's identity never
// changes, so entries never go stale; the bound only caps memory. Entries of
// sandboxes no longer listed are dropped at each list.
type podCache struct {
	mu sync.Mutex
	m  map[string]pod
}

const podCacheEntries = 4096

func (c *podCache) get(id string) (pod, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.m[id]
	return p, ok
}

func (c *podCache) put(id string, p pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]pod{}
	}
	if len(c.m) >= podCacheEntries {
		clear(c.m) // rare: far more sandboxes than a node runs
	}
	c.m[id] = p
}

// keep drops the entries whose id is not in ids.
func (c *podCache) keep(ids map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	maps.DeleteFunc(c.m, func(id string, _ pod) bool { return !ids[id] })
}
