package broker

import (
	"coffer/internal/policy"
	"coffer/internal/secret"
)

// Leases is the optional source of per-container values: dynamic linked
// secrets, whose every container gets its own lease of credentials from an
// issuing upstream (package lease implements it). Its methods are called
// with the broker's lock held: they must not block or do network I/O
// (issuing, renewing and revoking happen on the source's own goroutines).
type Leases interface {
	// Dynamic reports whether secret is a dynamic linked secret.
	Dynamic(secret string) bool
	// Lease returns the holder's current lease of secret: a version unique
	// to that lease (so that the agent's per-(secret, version) value cache
	// works unchanged) and the value, which the source keeps and zeroes.
	// Without one (ok false) it starts issuing one and later calls
	// Broker.LeaseChanged for the container.
	Lease(h LeaseHolder, secret string) (version uint64, value secret.Value, ok bool)
	// Peek returns the version of the holder's current lease of secret (0:
	// none yet) and its lease id, without side effects.
	Peek(containerID, secret string) (version uint64, leaseID string)
	// Release says that the container no longer holds secret; its lease is
	// revoked (asynchronously) once no secret of the container uses it.
	// reason is audited.
	Release(containerID, secret, reason string)
}

// LeaseHolder is the container a lease is for, as audited.
type LeaseHolder struct {
	ContainerID string
	Container   string // name
	Image       string
	Agent       string
}

// Reasons a broker gives Leases.Release.
const (
	ReleaseStopped   = "container stopped"
	ReleaseUngranted = "binding no longer grants the secret"
	ReleaseRemoved   = "agent removed"
)

// LeaseChanged pushes container id's files again: its lease of a dynamic
// secret was issued or replaced. The lease source calls it from its own
// goroutines, never while holding its own lock.
func (b *Broker) LeaseChanged(id string) {
	b.mu.Lock()
	if c := b.containers[id]; c != nil {
		b.push(c)
	}
	b.mu.Unlock()
	b.backpressure()
}

// leaseFor returns c's lease version and value of secret name, and whether
// name is dynamic (then version 0 means none yet: the file waits).
func (b *Broker) leaseFor(c *ctr, name string) (uint64, secret.Value, bool) {
	ls := b.cfg.Leases
	if ls == nil || !ls.Dynamic(name) {
		return 0, nil, false
	}
	v, val, ok := ls.Lease(LeaseHolder{ContainerID: c.info.Id, Container: clip(c.info.Name), Image: clip(c.info.Image), Agent: c.agent}, name)
	if !ok {
		return 0, nil, true
	}
	return v, val, true
}

// fileValue returns the value file f needs: its container's lease value
// for a dynamic secret (in dyn, from this push), else the version's, which
// push made sure the broker has (lookup).
func (b *Broker) fileValue(c *ctr, f verKey, dyn map[string]secret.Value) (secret.Value, error) {
	if v, ok := dyn[f.secret]; ok {
		return v, nil
	}
	v, _, err := b.lookup(c, f)
	return v, err
}

// wantVersion is the version c should hold of secret name for the rollout
// state: its own lease's for a dynamic secret (dynamic true; 0 while it is
// being issued), the current one otherwise.
func (b *Broker) wantVersion(c *ctr, name string) (uint64, bool) {
	if ls := b.cfg.Leases; ls != nil && ls.Dynamic(name) {
		v, _ := ls.Peek(c.info.Id, name)
		return v, true
	}
	return b.currentVersion(name), false
}

// releaseLeases tells the lease source about the secrets of old that are
// not in now (all of them when now is nil).
func (b *Broker) releaseLeases(c *ctr, old, now []policy.Grant, reason string) {
	ls := b.cfg.Leases
	if ls == nil || len(old) == 0 {
		return
	}
	keep := map[string]bool{}
	for _, g := range now {
		keep[g.Secret] = true
	}
	done := map[string]bool{}
	for _, g := range old {
		if !keep[g.Secret] && !done[g.Secret] {
			done[g.Secret] = true
			ls.Release(c.info.Id, g.Secret, reason)
		}
	}
}

// LeaseOf returns the lease id a container holds of a dynamic secret ("":
// none, or not dynamic), for secret show.
func (b *Broker) LeaseOf(containerID, secret string) string {
	if ls := b.cfg.Leases; ls != nil && ls.Dynamic(secret) {
		_, id := ls.Peek(containerID, secret)
		return id
	}
	return ""
}
