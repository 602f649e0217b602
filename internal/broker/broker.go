// Package broker pushes to connected agents the exact set of secret files
// each of their containers must hold, and tracks what every container has
// acknowledged (the rollout state).
//
// The broker keeps, per container, the grants computed from the bindings
// (package policy) and the files last sent. A change in the catalog (a new
// version, a deletion, a binding) recomputes only the containers it touches
// and queues a Desired message on their agent's stream; values travel once
// per secret version per stream.
//
// Need to know: a container id is held by the one agent that reported it
// first (another agent's report of it is refused, see anomaly.go); a
// container is matched with its own labels, its image's labels and its
// agent's labels (set by an admin, never by the agent); and an agent never
// receives a secret outside its scope, whatever its containers claim. What
// is sent is audited when it is queued for the stream (delivery.send), not
// only when the agent acknowledges it.
package broker

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/audit"
	"coffer/internal/authz"
	"coffer/internal/catalog"
	"coffer/internal/policy"
	"coffer/internal/secret"
)

// Catalog is what the broker needs of the secret catalog.
type Catalog interface {
	Bindings() *policy.Set
	Current(ctx context.Context, name string) (uint64, error)
	Value(ctx context.Context, name string, version uint64) (secret.Value, error)
}

// Auditor records delivery events.
type Auditor interface {
	Append(ctx context.Context, e audit.Event) (audit.Event, error)
}

// Agents authenticates agents by certificate and renews their
// certificates; it is implemented by *fleet.Fleet.
type Agents interface {
	Verify(cert *x509.Certificate) (string, error)
	Seen(name, addr string)
	Renew(ctx context.Context, name, currentSerial string, csrDER []byte) ([]byte, error)
	// Host returns the labels and scope an admin gave the agent at
	// enrollment (ok false once it is removed).
	Host(name string) (labels map[string]string, scope string, ok bool)
}

// Config configures a Broker.
type Config struct {
	Catalog Catalog
	Audit   Auditor
	// Spool, if set, keeps the delivery records queued for Audit where a
	// killed server does not lose them (spool.go).
	Spool  Spool
	Agents Agents
	Logger *slog.Logger
	// ReportBurst and ReportRate size each agent's token bucket of
	// container reports (see DefaultReportBurst); zero means the default.
	ReportBurst int
	ReportRate  float64 // tokens a second
	// Leases, if set, gives each container its own value of dynamic
	// linked secrets (see leases.go).
	Leases Leases
	// Pods, if set (the server has a kubeconfig), confirms each container
	// of a Kubernetes node agent against the API server (see kube.go);
	// PodGrace is how long a container may wait for its pod before the
	// wait is recorded (zero: DefaultPodGrace).
	Pods     PodVerifier
	PodGrace time.Duration
}

// Broker is safe for concurrent use.
type Broker struct {
	cfg Config
	log *slog.Logger

	// Test hooks, nil outside tests.
	hookBeforeRegister func(agent string)                  // a stream was authenticated and is about to be registered
	hookTarget         func(agent string, t policy.Target) // a container is about to be matched

	mu         sync.Mutex
	held       map[*session]struct{} // senders to wake once the pushes are done (holdWakes)
	presence   presenceMarks         // presence.go
	sessions   map[string]*session   // by agent name
	hosts      map[string]*host      // by agent name
	containers map[string]*ctr       // by container id: an id is held by one agent at a time
	bySecret   map[string]map[*ctr]struct{}
	current    map[string]uint64 // secret → current version, 0 = none; lazily filled
	values     map[verKey]secret.Value

	aq      auditQueue    // delivery records on their way to the audit trail
	sp      spoolState    // of those, the ones not yet in the spool (spool.go)
	sending sending       // sessions with messages to send (outbound.go)
	active  activity      // the last push or acknowledgement (outbound.go)
	inc     incidentState // quarantined hosts, frozen deliveries (incident.go)
	fetches fetchState    // store reads in flight, outside b.mu (fetch.go)

	byPod map[string]map[*ctr]struct{} // node agents' containers by pod uid (kube.go)
}

type verKey struct {
	secret  string
	version uint64
}

type ctr struct {
	agent   string
	host    *host
	info    *cofferv1.Container
	grants  []policy.Grant
	gen     uint64
	desired []*cofferv1.FileRef // last sent, sorted by file
	applied []*cofferv1.FileRef // last acknowledged
	// process is what its process runs with, as last acknowledged (process.go).
	process []*cofferv1.ProcessFile
	ackGen  uint64
	errGen  uint64 // the generation whose failure was last recorded
	sentAt  time.Time
	kube    kubeCtr // its pod, for a Kubernetes node agent (kube.go)
}

// New makes a Broker.
func New(cfg Config) *Broker {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReportBurst <= 0 {
		cfg.ReportBurst = DefaultReportBurst
	}
	if cfg.ReportRate <= 0 {
		cfg.ReportRate = DefaultReportRate
	}
	b := &Broker{
		cfg: cfg, log: cfg.Logger,
		sessions:   map[string]*session{},
		hosts:      map[string]*host{},
		containers: map[string]*ctr{},
		bySecret:   map[string]map[*ctr]struct{}{},
		byPod:      map[string]map[*ctr]struct{}{},
		current:    map[string]uint64{},
		values:     map[verKey]secret.Value{},
	}
	b.aq.init()
	b.sending.init()
	b.fetches.init()
	return b
}

// Changed is the catalog's OnChange hook: it pushes what the change means
// to every container it touches.
func (b *Broker) Changed(ch catalog.Change) {
	b.mu.Lock()
	first := b.holdWakes()
	switch ch.Kind {
	case catalog.SecretPut:
		b.setCurrent(ch.Secret, ch.Version)
		if b.prefetch(verKey{ch.Secret, ch.Version}, b.bySecret[ch.Secret]) {
			break // they are pushed once the value came
		}
		for c := range b.bySecret[ch.Secret] {
			b.push(c)
		}
	case catalog.SecretDeleted:
		b.setCurrent(ch.Secret, 0)
		for c := range b.bySecret[ch.Secret] {
			b.push(c)
		}
	case catalog.BindingPut, catalog.BindingDeleted:
		set := b.cfg.Catalog.Bindings()
		for _, c := range b.containers {
			b.regrant(c, set)
			b.push(c)
		}
	}
	b.releaseWakes(first)
	b.mu.Unlock()
	b.backpressure()
}

// setCurrent records a secret's current version and drops cached values of
// older versions.
func (b *Broker) setCurrent(name string, v uint64) {
	b.current[name] = v
	for c := range b.bySecret[name] {
		b.presence.mark(c.agent) // pending until they hold v
	}
	b.staleCurrent(name)
	for k, val := range b.values {
		if k.secret == name && k.version != v {
			val.Zero()
			delete(b.values, k)
		}
	}
}

func (b *Broker) currentVersion(name string) uint64 {
	if v, ok := b.current[name]; ok {
		return v
	}
	v, err := b.cfg.Catalog.Current(context.Background(), name)
	if err != nil {
		v = 0
	}
	b.current[name] = v
	return v
}

// unindex removes c from the secret index. A secret no container is bound
// to any more has its cached values zeroed and dropped: the server holds
// a value in the clear only while some container needs it.
func (b *Broker) unindex(c *ctr) {
	for _, g := range c.grants {
		b.unindexSecret(c, g.Secret)
	}
}

// unindexSecret removes c from secret name's containers, dropping the
// secret's cached values if c was the last one.
func (b *Broker) unindexSecret(c *ctr, name string) {
	m := b.bySecret[name]
	if m == nil {
		return
	}
	delete(m, c)
	if len(m) > 0 {
		return
	}
	delete(b.bySecret, name)
	for k, val := range b.values {
		if k.secret == name {
			val.Zero()
			delete(b.values, k)
		}
	}
}

// regrant recomputes c's grants from set and updates the secret index:
// only for the secrets c gains or loses, so that a binding change, which
// regrants every container, costs little for those it does not concern
// and keeps their cached values.
func (b *Broker) regrant(c *ctr, set *policy.Set) {
	old := c.grants
	defer func() { b.releaseLeases(c, old, c.grants, ReleaseUngranted) }()
	t := policy.Target{
		Labels: c.info.Labels, ImageLabels: c.info.ImageLabels, HostLabels: c.host.labels,
		Image: c.info.Image, ImageDigest: c.info.ImageDigest,
	}
	if b.hookTarget != nil {
		b.hookTarget(c.agent, t)
	}
	grants := set.Match(t)
	if c.withheld() {
		grants = nil // its pod is not confirmed by the API server (kube.go)
	}
	if c.host.scope != "" {
		grants = scoped(set, t, grants, c.host.scope)
	}
	c.grants = grants
	b.presence.mark(c.agent)
	for _, g := range grants {
		m := b.bySecret[g.Secret]
		if m == nil {
			m = map[*ctr]struct{}{}
			b.bySecret[g.Secret] = m
		}
		m[c] = struct{}{}
	}
	for _, g := range old {
		if !slices.ContainsFunc(grants, func(n policy.Grant) bool { return n.Secret == g.Secret }) {
			b.unindexSecret(c, g.Secret)
		}
	}
}

// scoped keeps the grants whose secret is inside scope (authz.InScope: the
// name has the scope's prefix). Where a binding outside the scope won a
// file over one inside it, the one inside it gets the file, as if the
// other did not exist. It costs nothing more than a scan when every grant
// is in scope.
func scoped(set *policy.Set, t policy.Target, grants []policy.Grant, scope string) []policy.Grant {
	p := authz.Principal{Scope: scope}
	if !slices.ContainsFunc(grants, func(g policy.Grant) bool { return !authz.InScope(p, g.Secret) }) {
		return grants
	}
	granted, shadowed := set.Explain(t)
	var out []policy.Grant
	taken := map[string]bool{}
	// shadowed is sorted by file then binding name: the first one inside
	// the scope is the one Match would have chosen.
	for _, g := range slices.Concat(granted, shadowed) {
		if !taken[g.File] && authz.InScope(p, g.Secret) {
			out = append(out, g)
			taken[g.File] = true
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].File < out[j].File })
	return out
}

// push computes c's desired files and, if they changed, queues them on the
// container's agent stream together with the values they need. Every file
// newly sent to the container is recorded (delivery.send) before the
// message can leave; a value too large for the agent's receive limit is
// left out, and that is recorded as a failed send.
//
// push never reads the store: a current version or value the broker does
// not have yet is fetched outside the lock (fetch.go), and c is pushed
// again when it comes; meanwhile c keeps what it has.
func (b *Broker) push(c *ctr) {
	// Incident response first: a quarantined host's containers get nothing
	// (not even a lease asked for), a freeze sends nothing new.
	quarantined, hold := b.hold(c)
	if hold {
		return
	}
	if c.kube.state == podStateHeld && len(c.desired) == 0 {
		return // its pod is not known yet: no state at all, not even an empty one (kube.go)
	}
	grants := c.grants
	if quarantined {
		grants = nil
	}
	var files []*cofferv1.FileRef
	var dyn map[string]secret.Value // lease values of dynamic secrets, by secret
	wait := false                   // something is being fetched for c
	for _, g := range grants {
		v, val, isDyn := b.leaseFor(c, g.Secret)
		switch {
		case !isDyn:
			var st versionState
			if v, st = b.versionOf(c, g.Secret); st == versionWait {
				wait = true // (a store that is away answers nothing: the container keeps what it has)
				continue
			}
		case v != 0:
			if dyn == nil {
				dyn = map[string]secret.Value{}
			}
			dyn[g.Secret] = val
		}
		if v == 0 {
			continue
		}
		if g.Rotation == policy.RotationNone {
			var ok bool
			if v, ok = b.pinned(c, g, v); !ok {
				wait = true
				continue
			}
		}
		files = append(files, &cofferv1.FileRef{Secret: g.Secret, Version: v, File: g.File, Mode: g.Mode, Uid: int32(g.UID), Gid: int32(g.GID), Rotation: g.Rotation})
	}
	if wait {
		return
	}
	sort.Slice(files, func(i, j int) bool { return files[i].File < files[j].File })
	if c.gen > 0 && sameFiles(files, c.desired) {
		return
	}
	s := b.sessions[c.agent]
	if s == nil {
		return // offline: it gets everything on reconnect
	}
	// Every value first: all those missing are fetched at once.
	for _, f := range files {
		if _, ok := dyn[f.Secret]; !ok {
			if _, ready, _ := b.lookup(c, verKey{f.Secret, f.Version}); !ready {
				wait = true
			}
		}
	}
	if wait {
		return
	}
	var vals []*cofferv1.SecretValue
	var kept []*cofferv1.FileRef
	for _, f := range files {
		v, err := b.fileValue(c, verKey{f.Secret, f.Version}, dyn)
		if err != nil {
			b.log.Error("cannot open secret for delivery", "secret", f.Secret, "version", f.Version, "err", err)
			continue
		}
		if !s.fits(f.Secret, len(v)) {
			msg := fmt.Sprintf("value too large for the agent's receive limit of %d bytes; not sent", s.maxRecv)
			b.log.Warn("secret not sent: "+msg, "agent", c.agent, "container", c.info.Name, "id", c.info.Id,
				"secret", f.Secret, "version", f.Version, "file", f.File)
			b.queueDelivery(c.info.Id, delivery{agent: c.agent, action: "delivery.send", info: c.info, f: f, err: msg})
			continue
		}
		vals = append(vals, &cofferv1.SecretValue{Secret: f.Secret, Version: f.Version, Value: v})
		kept = append(kept, f)
	}
	for _, f := range kept {
		// After a report (gen 0) everything is sent again; otherwise only
		// what the container was not sent before.
		if c.gen == 0 || !slices.ContainsFunc(c.desired, func(p *cofferv1.FileRef) bool {
			return p.File == f.File && p.Secret == f.Secret && p.Version == f.Version
		}) {
			b.queueDelivery(c.info.Id, delivery{agent: c.agent, action: "delivery.send", info: c.info, f: f})
		}
	}
	c.gen++
	c.desired = kept
	c.sentAt = time.Now()
	b.active.touch()
	b.presence.mark(c.agent)
	s.enqueue(vals, &cofferv1.Desired{ContainerId: c.info.Id, Generation: c.gen, Files: kept})
	if b.held != nil {
		b.held[s] = struct{}{}
	} else {
		s.notify()
	}
}

// holdWakes makes pushes leave their sessions' senders asleep until
// releaseWakes: a change that pushes many containers (a rotation, a
// binding change, a value that came) then reaches each agent as one
// message for all of its containers, instead of a first message for the
// first container its sender was quick to take and more for the rest.
// Both are called under b.mu.
// Held already, holdWakes returns false and the matching releaseWakes
// leaves the hold to the first.
func (b *Broker) holdWakes() (first bool) {
	if b.held != nil {
		return false
	}
	b.held = map[*session]struct{}{}
	return true
}

func (b *Broker) releaseWakes(first bool) {
	if !first {
		return
	}
	hold := ackHoldFor(len(b.held))
	if hold > 0 {
		b.active.expect(hold)
	}
	for s := range b.held {
		if hold > 0 {
			s.holdAcks(hold)
		}
		s.notify()
	}
	b.held = nil
}

// A change pushed to many agents at once asks them to hold back their
// acknowledgements for a while (Batch.ack_hold_ms), so that the server
// reads them after its sends and not between them: an acknowledgement is
// the rollout state's bookkeeping and its delivery record, while the
// agents still waiting for the change are waiting for the files. The
// containers get their files as soon as they come either way. The hold
// grows with the agents sent to (ackHoldPerAgent), from
// ackHoldMinAgents, up to ackHoldMax; an agent that ignores it gains
// nothing but an earlier place in the rollout state.
const (
	ackHoldMinAgents = 16
	ackHoldPerAgent  = time.Millisecond
	ackHoldMax       = 300 * time.Millisecond
)

// ackHoldFor is the hold asked of n agents sent one change at once.
func ackHoldFor(n int) time.Duration {
	if n < ackHoldMinAgents {
		return 0
	}
	return min(time.Duration(n)*ackHoldPerAgent, ackHoldMax)
}

// pinned is the version of g's file for container c under the rotation
// contract none: the version c was last sent of that secret in that file,
// while it can still be opened; else, for a file this broker never sent
// it (after a server restart), the version its agent reports it holds
// (heldPin); else current. A restarted container gets the current version.
// ok is false while an old version's value is being fetched (c is pushed
// again then).
func (b *Broker) pinned(c *ctr, g policy.Grant, current uint64) (v uint64, ok bool) {
	for _, f := range c.desired {
		if f.File == g.File && f.Secret == g.Secret && f.Version != current {
			_, ready, err := b.lookup(c, verKey{f.Secret, f.Version})
			if !ready {
				return 0, false
			}
			if err == nil {
				return f.Version, true
			}
		}
	}
	return b.heldPin(c, g, current)
}

func sameFiles(a, b []*cofferv1.FileRef) bool {
	return slices.EqualFunc(a, b, func(x, y *cofferv1.FileRef) bool {
		return x.Secret == y.Secret && x.Version == y.Version && x.File == y.File && x.Mode == y.Mode && x.Uid == y.Uid && x.Gid == y.Gid &&
			x.Rotation == y.Rotation
	})
}

// Holder is one container's state for a secret.
type Holder struct {
	Agent         string `json:"agent"`
	ContainerID   string `json:"container_id"`
	ContainerName string `json:"container_name"`
	Version       uint64 `json:"version"` // acknowledged; 0 = none yet
	Pending       bool   `json:"pending"` // a newer state was sent and not yet acknowledged
	// Rotation is the contract of the binding that gives the container the
	// secret ("" for file). Under none a container that holds a version is
	// not pending: it keeps it by contract.
	Rotation string `json:"rotation,omitempty"`
	// Process is what the container's process runs with, when coffer exec
	// put the secret in its environment (nil: not reported). A process
	// whose restart is pending makes the holder pending.
	Process *ProcessState `json:"process,omitempty"`
}

// Rollout lists the containers bound to a secret with the version each holds.
func (b *Broker) Rollout(name string) []Holder {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := []Holder{}
	for c := range b.bySecret[name] {
		h := Holder{Agent: c.agent, ContainerID: c.info.Id, ContainerName: c.info.Name, Pending: c.ackGen != c.gen}
		for _, f := range c.applied {
			if f.Secret == name {
				h.Version = f.Version
			}
		}
		for _, g := range c.grants {
			if g.Secret == name {
				h.Rotation = g.Rotation
			}
		}
		if want, dynamic := b.wantVersion(c, name); want != 0 && h.Version != want && (h.Rotation != policy.RotationNone || h.Version == 0) || dynamic && want == 0 {
			h.Pending = true // a dynamic secret's holder waits for its own lease, not for a current version
		}
		if h.Process = processState(c, name); h.Process != nil && h.Process.State == ProcessRestartPending {
			h.Pending = true // the file is new, its process not yet
		}
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Agent+out[i].ContainerName < out[j].Agent+out[j].ContainerName })
	return out
}

// Containers counts the containers an agent reported, by agent name.
func (b *Broker) Containers() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]int{}
	for name, h := range b.hosts {
		if n := len(h.containers); n > 0 {
			out[name] = n
		}
	}
	return out
}

// Connected reports the agents with an open stream.
func (b *Broker) Connected() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Sorted(maps.Keys(b.sessions))
}

// Disconnect closes an agent's stream at once (the agent was revoked) and
// forgets its containers and everything else the broker kept of it.
func (b *Broker) Disconnect(agent string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.sessions[agent]; s != nil {
		s.cancel()
		delete(b.sessions, agent)
	}
	b.presence.mark(agent)
	if h := b.hosts[agent]; h != nil {
		for _, c := range h.containers {
			b.dropLocked(c, ReleaseRemoved)
		}
		delete(b.hosts, agent)
	}
}

// dropLocked forgets container c (reason: why, for its leases).
func (b *Broker) dropLocked(c *ctr, reason string) {
	b.presence.mark(c.agent)
	b.releaseLeases(c, c.grants, nil, reason)
	b.unindex(c)
	b.unpodLocked(c)
	if b.containers[c.info.Id] == c {
		delete(b.containers, c.info.Id)
	}
	if c.host.containers[c.info.Id] == c {
		delete(c.host.containers, c.info.Id)
	}
}
