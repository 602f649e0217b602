package broker

import (
	"context"
	"sort"
	"time"
)

// incidentState is what incident response changes in the broker: hosts in
// quarantine (their containers are sent an empty state) and a freeze of
// every other delivery. Guarded by Broker.mu.
type incidentState struct {
	quarantined map[string]bool
	frozen      bool
}

// ReleaseQuarantined is why a quarantined host's leases are revoked.
const ReleaseQuarantined = "host quarantined"

// HeldFile is one file a container held when its host was quarantined.
type HeldFile struct {
	Secret  string `json:"secret"`
	Version uint64 `json:"version"`
	File    string `json:"file"`
}

// HeldContainer is what one container of a quarantined host held
// (acknowledged) and was last sent.
type HeldContainer struct {
	ContainerID string     `json:"container_id"`
	Container   string     `json:"container"`
	ImageDigest string     `json:"image_digest,omitempty"`
	Held        []HeldFile `json:"held"`
	// Sent are files sent and not (yet) acknowledged: the agent has their
	// values.
	Sent []HeldFile `json:"sent,omitempty"`
}

// Quarantine removes every secret from every container of agent at once
// (an empty desired state on its stream), delivers nothing more to it,
// and returns what its containers held. Call Emptied to learn when the
// agent acknowledged the removal, then revoke the agent and Release it.
func (b *Broker) Quarantine(agent string) []HeldContainer {
	b.mu.Lock()
	if b.inc.quarantined == nil {
		b.inc.quarantined = map[string]bool{}
	}
	b.inc.quarantined[agent] = true
	out := []HeldContainer{}
	if h := b.hosts[agent]; h != nil {
		for _, c := range h.containers {
			hc := HeldContainer{ContainerID: c.info.Id, Container: c.info.Name, ImageDigest: c.info.ImageDigest, Held: []HeldFile{}}
			for _, f := range c.applied {
				hc.Held = append(hc.Held, HeldFile{Secret: f.Secret, Version: f.Version, File: f.File})
			}
			for _, f := range c.desired {
				if !containsFile(c.applied, f.Secret, f.Version, f.File) {
					hc.Sent = append(hc.Sent, HeldFile{Secret: f.Secret, Version: f.Version, File: f.File})
				}
			}
			out = append(out, hc)
			b.releaseLeases(c, c.grants, nil, ReleaseQuarantined) // its dynamic credentials are revoked now
			b.push(c)
		}
	}
	b.mu.Unlock()
	b.backpressure()
	sort.Slice(out, func(i, j int) bool { return out[i].Container+out[i].ContainerID < out[j].Container+out[j].ContainerID })
	return out
}

// Emptied waits (until ctx ends) for every container of a quarantined
// agent to acknowledge holding nothing. It reports whether they did, and
// whether the agent was connected at all.
func (b *Broker) Emptied(ctx context.Context, agent string) (emptied, connected bool) {
	for {
		b.mu.Lock()
		connected = b.sessions[agent] != nil
		emptied = connected
		if h := b.hosts[agent]; h != nil && connected {
			for _, c := range h.containers {
				if c.ackGen != c.gen || len(c.applied) > 0 {
					emptied = false
				}
			}
		}
		b.mu.Unlock()
		if emptied || !connected {
			return emptied, connected
		}
		select {
		case <-ctx.Done():
			return false, connected
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Release forgets agent's quarantine (once it is revoked and
// disconnected; a new agent may later enroll under the name).
func (b *Broker) Release(agent string) {
	b.mu.Lock()
	delete(b.inc.quarantined, agent)
	b.mu.Unlock()
}

// Freeze stops (true) or resumes (false) every delivery: while frozen, no
// container is sent a new file, rotation or revocation (a quarantine
// still empties its host). Resuming sends every container its state.
func (b *Broker) Freeze(on bool) {
	b.mu.Lock()
	was := b.inc.frozen
	b.inc.frozen = on
	if was && !on {
		for _, c := range b.containers {
			b.push(c)
		}
	}
	b.mu.Unlock()
	b.backpressure()
}

// Frozen reports whether deliveries are frozen.
func (b *Broker) Frozen() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inc.frozen
}

// hold says what incident response does to c's push: a quarantined host's
// containers get nothing (files nil); while frozen, others are not sent
// anything new (hold true). Called by push under b.mu.
func (b *Broker) hold(c *ctr) (quarantined, hold bool) {
	if b.inc.quarantined[c.agent] {
		return true, false
	}
	return false, b.inc.frozen
}

func containsFile[F interface {
	GetSecret() string
	GetVersion() uint64
	GetFile() string
}](fs []F, secret string, version uint64, file string) bool {
	for _, f := range fs {
		if f.GetSecret() == secret && f.GetVersion() == version && f.GetFile() == file {
			return true
		}
	}
	return false
}
