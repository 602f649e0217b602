package broker

import (
	"maps"
	"slices"
	"sort"
	"strings"

	"coffer/internal/policy"
)

// AgentPresence is what a server knows of one agent connected to it: its
// containers and, for each secret granted to them, the version each has
// acknowledged. Servers sharing a store publish it so that any of them can
// answer rollout status and agent ls for the whole installation (see
// internal/server/presence.go). It holds names and version numbers, never
// a value.
type AgentPresence struct {
	Server     string              `json:"server,omitempty"`  // the address of the server it is connected to
	Address    string              `json:"address,omitempty"` // the agent's remote address
	Containers []ContainerPresence `json:"containers"`
	// Omitted counts the containers left out of a record too large to
	// publish (Containers is then empty).
	Omitted int `json:"omitted,omitempty"`
}

// ContainerPresence is one container of an AgentPresence.
type ContainerPresence struct {
	ID      string    `json:"id"`
	Name    string    `json:"name,omitempty"`
	Secrets []Holding `json:"secrets,omitempty"` // sorted by secret
}

// Holding is a container's state for one granted secret, as in Holder.
type Holding struct {
	Secret   string `json:"s"`
	Version  uint64 `json:"v,omitempty"`
	Pending  bool   `json:"p,omitempty"`
	Rotation string `json:"r,omitempty"`
}

// presenceMarks are the agents whose presence may have changed since it
// was last taken (PresenceChanges), so that a server publishing presence
// recomputes only theirs. Nothing is kept until PresenceChanges is first
// called (a single server on bbolt never does). Guarded by b.mu.
type presenceMarks struct {
	on    bool
	dirty map[string]struct{}
}

// mark notes that agent's presence may have changed.
func (m *presenceMarks) mark(agent string) {
	if m.on {
		m.dirty[agent] = struct{}{}
	}
}

// Presence returns, by agent name, the agents with an open stream to this
// broker and their containers' rollout state (sorted, so that an unchanged
// state compares equal).
func (b *Broker) Presence() map[string]AgentPresence {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]AgentPresence, len(b.sessions))
	for name := range b.sessions {
		out[name] = b.presenceOf(name)
	}
	return out
}

// PresenceChanges returns the agents whose presence may have changed
// since the last call: the connected ones with their state, and those
// no longer connected here in gone. With all (and on the first call) it
// returns every connected agent, as Presence does, and gone is nil: the
// caller compares with what it published. The records are made
// presenceChunk agents at a time, letting go of the broker's lock between
// chunks, so that a round of a thousand agents does not hold up the
// pushes and acknowledgements of a rotation meanwhile; an agent changed
// after its record was made is marked again, for the next call.
func (b *Broker) PresenceChanges(all bool) (changed map[string]AgentPresence, gone []string) {
	b.mu.Lock()
	first := !b.presence.on
	b.presence.on = true
	var names []string
	if all || first {
		names = slices.Collect(maps.Keys(b.sessions))
	} else {
		names = slices.Collect(maps.Keys(b.presence.dirty))
	}
	b.presence.dirty = map[string]struct{}{}
	b.mu.Unlock()

	changed = make(map[string]AgentPresence, len(names))
	for chunk := range slices.Chunk(names, presenceChunk) {
		b.mu.Lock()
		for _, name := range chunk {
			if b.sessions[name] == nil {
				if !all && !first {
					gone = append(gone, name)
				}
				continue
			}
			changed[name] = b.presenceOf(name)
		}
		b.mu.Unlock()
	}
	sort.Strings(gone)
	return changed, gone
}

// presenceChunk is how many agents' records PresenceChanges makes under
// one hold of the broker's lock.
const presenceChunk = 32

// presenceOf is one connected agent's presence. Called under b.mu.
func (b *Broker) presenceOf(name string) AgentPresence {
	p := AgentPresence{Containers: []ContainerPresence{}}
	if h := b.hosts[name]; h != nil {
		p.Containers = make([]ContainerPresence, 0, len(h.containers))
		for _, c := range h.containers {
			cp := ContainerPresence{ID: c.info.Id, Name: c.info.Name, Secrets: make([]Holding, 0, len(c.grants))}
			for _, g := range c.grants {
				hd := Holding{Secret: g.Secret, Rotation: g.Rotation, Pending: c.ackGen != c.gen}
				for _, f := range c.applied {
					if f.Secret == g.Secret {
						hd.Version = f.Version
					}
				}
				if want, dynamic := b.wantVersion(c, g.Secret); want != 0 && hd.Version != want && (hd.Rotation != policy.RotationNone || hd.Version == 0) || dynamic && want == 0 {
					hd.Pending = true
				}
				cp.Secrets = append(cp.Secrets, hd)
			}
			slices.SortFunc(cp.Secrets, func(x, y Holding) int { return strings.Compare(x.Secret, y.Secret) })
			cp.Secrets = slices.CompactFunc(cp.Secrets, func(x, y Holding) bool { return x.Secret == y.Secret })
			p.Containers = append(p.Containers, cp)
		}
	}
	slices.SortFunc(p.Containers, func(x, y ContainerPresence) int { return strings.Compare(x.ID, y.ID) })
	return p
}

// Equal reports whether p and q are the same record (as Presence and
// PresenceChanges make them: sorted).
func (p AgentPresence) Equal(q AgentPresence) bool {
	return p.Server == q.Server && p.Address == q.Address && p.Omitted == q.Omitted &&
		slices.EqualFunc(p.Containers, q.Containers, func(x, y ContainerPresence) bool {
			return x.ID == y.ID && x.Name == y.Name && slices.Equal(x.Secrets, y.Secrets)
		})
}

// Holders lists the holders of secret name in p, as Rollout does for this
// broker's own agents.
func (p AgentPresence) Holders(agent, name string) []Holder {
	var out []Holder
	for _, c := range p.Containers {
		i, ok := slices.BinarySearchFunc(c.Secrets, name, func(h Holding, s string) int {
			switch {
			case h.Secret < s:
				return -1
			case h.Secret > s:
				return 1
			}
			return 0
		})
		if !ok {
			continue
		}
		h := c.Secrets[i]
		out = append(out, Holder{Agent: agent, ContainerID: c.ID, ContainerName: c.Name, Version: h.Version, Pending: h.Pending, Rotation: h.Rotation})
	}
	return out
}
