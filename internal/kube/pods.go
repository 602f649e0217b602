package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Pod is what the server keeps of a pod bound to a node: enough to tell
// whether a container an agent reports is one of the pods the API server
// scheduled on that agent's node, and what selectors may see of it.
// Values are never modified once made: Labels and Containers are shared.
type Pod struct {
	UID, Namespace, Name string
	Node                 string            // spec.nodeName
	ServiceAccount       string            // spec.serviceAccountName
	Labels               map[string]string // the pod's labels; nil when Oversize
	Containers           []string          // containers, init and ephemeral containers, sorted
	// Oversize: the pod has more labels or containers than the bounds
	// below; its labels are not kept (never cut short: a selector such as
	// `!tier` would match a label set with tier cut off).
	Oversize bool
}

// Bounds on what is kept of one pod (the API server limits an object to
// about 1.5 MB, but a pod's labels can still fill most of it). The same
// label bounds as the agent's containerd runtime.
const (
	MaxLabels      = 256
	MaxLabelsBytes = 64 << 10
	MaxContainers  = 1024
)

// ErrPods marks a pod watch that cannot start.
var ErrPods = errors.New("kubernetes pods")

// startTimeout bounds the checks and the first list at Start.
const startTimeout = 60 * time.Second

// Pods is an index, by uid, of the cluster's pods that are bound to a node
// (spec.nodeName set), kept current by a watch. It is safe for concurrent
// use.
type Pods struct {
	source string // the kubeconfig, for errors
	cs     kubernetes.Interface
	log    *slog.Logger

	mu    sync.RWMutex
	byUID map[string]Pod
	subs  []func(uid string)

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// NewPods prepares an index of the pods cfg's API server has bound to
// nodes; source (the kubeconfig's path, or InCluster) names it in errors.
// Nothing is read until Start.
func NewPods(cfg *rest.Config, source string, log *slog.Logger) (*Pods, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: kubeconfig %s: %w", ErrPods, source, err)
	}
	return newPods(cs, source, log), nil
}

func newPods(cs kubernetes.Interface, source string, log *slog.Logger) *Pods {
	return &Pods{source: source, cs: cs, log: log, byUID: map[string]Pod{}, stop: make(chan struct{}), done: make(chan struct{})}
}

// Subscribe registers fn, called with a pod's uid after the index learned
// of it, saw it change or saw it go (deleted). fn is called from the
// watch's goroutine, one call at a time, never under the index's lock; it
// may call Pod. Subscribe before Start.
func (p *Pods) Subscribe(fn func(uid string)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.subs = append(p.subs, fn)
}

// Pod returns the pod with that uid, if the API server has it bound to a
// node.
func (p *Pods) Pod(uid string) (Pod, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	pd, ok := p.byUID[uid]
	return pd, ok
}

// Len is the number of pods indexed.
func (p *Pods) Len() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.byUID)
}

// boundToNode selects the pods the scheduler (or their author) has bound
// to a node: the only ones a node's containers can belong to.
var boundToNode = fields.OneTermNotEqualSelector("spec.nodeName", "").String()

// Start checks that the credentials may list and watch pods in every
// namespace, lists them, and keeps the index current until Close. It
// returns an error naming the kubeconfig and what is missing if the API
// server cannot be reached or refuses (RBAC), and then watches nothing.
func (p *Pods) Start(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	opts := metav1.ListOptions{FieldSelector: boundToNode, Limit: 1}
	if _, err := p.cs.CoreV1().Pods(metav1.NamespaceAll).List(cctx, opts); err != nil {
		return p.startError("list", err)
	}
	opts.Limit, opts.TimeoutSeconds = 0, new(int64(1))
	w, err := p.cs.CoreV1().Pods(metav1.NamespaceAll).Watch(cctx, opts)
	if err != nil {
		return p.startError("watch", err)
	}
	w.Stop()

	lw := cache.NewFilteredListWatchFromClient(p.cs.CoreV1().RESTClient(), "pods", metav1.NamespaceAll,
		func(o *metav1.ListOptions) { o.FieldSelector = boundToNode })
	inf := cache.NewSharedIndexInformer(lw, &corev1.Pod{}, 0, cache.Indexers{})
	// The informer's own store keeps only what the index needs: a pod's
	// status, annotations and container specs are never held.
	if err := inf.SetTransform(strip); err != nil {
		return fmt.Errorf("%w: %w", ErrPods, err)
	}
	if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		p.log.Warn("kubernetes pod watch failed; retrying (containers of pods it has not seen get nothing meanwhile)",
			"kubeconfig", p.source, "err", err)
	}); err != nil {
		return fmt.Errorf("%w: %w", ErrPods, err)
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.put(obj) },
		UpdateFunc: func(_, obj any) { p.put(obj) },
		DeleteFunc: p.remove,
	}); err != nil {
		return fmt.Errorf("%w: %w", ErrPods, err)
	}
	go func() {
		defer close(p.done)
		inf.Run(p.stop)
	}()
	if !cache.WaitForCacheSync(cctx.Done(), inf.HasSynced) {
		p.Close()
		return fmt.Errorf("%w: kubeconfig %s: the first list of pods did not complete within %s", ErrPods, p.source, startTimeout)
	}
	p.log.Info("watching the pods bound to nodes", "kubeconfig", p.source, "pods", p.Len())
	return nil
}

func (p *Pods) startError(verb string, err error) error {
	need := "coffer-server needs get, list and watch on pods in all namespaces (a ClusterRole; see deploy/kubernetes/coffer-server.yaml)"
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w: kubeconfig %s: may not %s pods in all namespaces (%s): %w", ErrPods, p.source, verb, need, err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%w: kubeconfig %s: the API server refused its credentials: %w", ErrPods, p.source, err)
	}
	return fmt.Errorf("%w: kubeconfig %s: cannot %s pods (is the API server reachable?): %w", ErrPods, p.source, verb, err)
}

// Close stops the watch.
func (p *Pods) Close() {
	p.once.Do(func() { close(p.stop) })
}

// Done is closed once the watch has stopped after Close (never if Start
// did not start it).
func (p *Pods) Done() <-chan struct{} { return p.done }

// strip is the informer's transform: a pod with only the fields the index
// reads.
func strip(obj any) (any, error) {
	pd, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone: its pod was stripped when stored
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pd.Name, Namespace: pd.Namespace, UID: pd.UID, ResourceVersion: pd.ResourceVersion, Labels: pd.Labels},
		Spec:       corev1.PodSpec{NodeName: pd.Spec.NodeName, ServiceAccountName: pd.Spec.ServiceAccountName},
	}
	names := func(n int, name func(int) string) []corev1.Container {
		cs := make([]corev1.Container, n)
		for i := range cs {
			cs[i].Name = name(i)
		}
		return cs
	}
	out.Spec.Containers = names(len(pd.Spec.Containers), func(i int) string { return pd.Spec.Containers[i].Name })
	out.Spec.InitContainers = names(len(pd.Spec.InitContainers), func(i int) string { return pd.Spec.InitContainers[i].Name })
	for _, e := range pd.Spec.EphemeralContainers {
		out.Spec.EphemeralContainers = append(out.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: e.Name}})
	}
	return out, nil
}

// podOf is the index's entry of a (stripped) pod.
func podOf(pd *corev1.Pod) Pod {
	out := Pod{UID: string(pd.UID), Namespace: pd.Namespace, Name: pd.Name, Node: pd.Spec.NodeName, ServiceAccount: pd.Spec.ServiceAccountName}
	n := len(pd.Spec.Containers) + len(pd.Spec.InitContainers) + len(pd.Spec.EphemeralContainers)
	size := 0
	for k, v := range pd.Labels {
		size += len(k) + len(v)
	}
	if n > MaxContainers || len(pd.Labels) > MaxLabels || size > MaxLabelsBytes {
		out.Oversize = true
		return out
	}
	out.Labels = pd.Labels
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	out.Containers = make([]string, 0, n)
	for _, c := range pd.Spec.Containers {
		out.Containers = append(out.Containers, c.Name)
	}
	for _, c := range pd.Spec.InitContainers {
		out.Containers = append(out.Containers, c.Name)
	}
	for _, c := range pd.Spec.EphemeralContainers {
		out.Containers = append(out.Containers, c.Name)
	}
	slices.Sort(out.Containers)
	return out
}

func (p *Pods) put(obj any) {
	pd, ok := obj.(*corev1.Pod)
	if !ok || pd.UID == "" {
		return
	}
	e := podOf(pd)
	if e.Oversize {
		p.log.Warn("pod beyond the bounds the server keeps; its containers get nothing", "namespace", pd.Namespace, "pod", pd.Name,
			"labels", len(pd.Labels), "max_labels", MaxLabels, "max_labels_bytes", MaxLabelsBytes, "max_containers", MaxContainers)
	}
	p.mu.Lock()
	old, had := p.byUID[e.UID]
	p.byUID[e.UID] = e
	subs := p.subs
	p.mu.Unlock()
	if had && same(old, e) {
		return // a status change: nothing the index keeps
	}
	for _, fn := range subs {
		fn(e.UID)
	}
}

func (p *Pods) remove(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pd, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	uid := string(pd.UID)
	p.mu.Lock()
	_, had := p.byUID[uid]
	delete(p.byUID, uid)
	subs := p.subs
	p.mu.Unlock()
	if !had {
		return
	}
	for _, fn := range subs {
		fn(uid)
	}
}

func same(a, b Pod) bool {
	if a.Namespace != b.Namespace || a.Name != b.Name || a.Node != b.Node || a.ServiceAccount != b.ServiceAccount || a.Oversize != b.Oversize {
		return false
	}
	if len(a.Labels) != len(b.Labels) || !slices.Equal(a.Containers, b.Containers) {
		return false
	}
	for k, v := range a.Labels {
		if w, ok := b.Labels[k]; !ok || w != v {
			return false
		}
	}
	return true
}
