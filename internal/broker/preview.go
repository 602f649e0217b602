package broker

import (
	"cmp"
	"slices"

	"coffer/internal/policy"
)

// Effect is what a change would do to one file of one container the
// broker knows (a running container an agent reported).
type Effect struct {
	Agent         string `json:"agent"`
	ContainerID   string `json:"container_id"`
	ContainerName string `json:"container_name"`
	Change        string `json:"change"` // EffectGain, EffectLose, EffectChange or EffectRotate
	Secret        string `json:"secret"`
	File          string `json:"file"`
	Binding       string `json:"binding"` // the binding that grants (gain, change) or granted (lose) the file
}

// Kinds of Effect.
const (
	EffectGain   = "gain"   // the container would get the file
	EffectLose   = "lose"   // the container would lose the file
	EffectChange = "change" // same file and secret, another mode, owner or binding
	EffectRotate = "rotate" // same file and secret, another version
)

// Preview reports what every container the broker knows would gain and
// lose if set replaced the current bindings, with each agent's scope
// applied as the broker applies it. It is read-only: it holds the broker's
// lock only to copy each container's description and grants (O(containers),
// no I/O), and matches with the lock released. A grant of a secret that
// does not exist (or is deleted) is listed too: it delivers nothing until
// the secret exists.
func (b *Broker) Preview(set *policy.Set) []Effect {
	type snap struct {
		agent, id, name, scope string
		target                 policy.Target
		grants                 []policy.Grant // never modified in place: regrant replaces the slice
	}
	b.mu.Lock()
	snaps := make([]snap, 0, len(b.containers))
	for _, c := range b.containers {
		if c.withheld() {
			continue // gets nothing whatever the bindings (kube.go)
		}
		snaps = append(snaps, snap{
			agent: c.agent, id: c.info.Id, name: c.info.Name, scope: c.host.scope, grants: c.grants,
			target: policy.Target{
				Labels: c.info.Labels, ImageLabels: c.info.ImageLabels, HostLabels: c.host.labels,
				Image: c.info.Image, ImageDigest: c.info.ImageDigest,
			},
		})
	}
	b.mu.Unlock()

	var out []Effect
	for _, s := range snaps {
		next := set.Match(s.target)
		if s.scope != "" {
			next = scoped(set, s.target, next, s.scope)
		}
		effect := func(change string, g policy.Grant) {
			out = append(out, Effect{Agent: s.agent, ContainerID: s.id, ContainerName: s.name, Change: change,
				Secret: g.Secret, File: g.File, Binding: g.Binding})
		}
		now := map[string]policy.Grant{}
		for _, g := range s.grants {
			now[g.File] = g
		}
		for _, g := range next {
			old, had := now[g.File]
			delete(now, g.File)
			switch {
			case !had:
				effect(EffectGain, g)
			case old.Secret != g.Secret:
				effect(EffectLose, old)
				effect(EffectGain, g)
			case old != g:
				effect(EffectChange, g)
			}
		}
		for _, g := range now {
			effect(EffectLose, g)
		}
	}
	slices.SortFunc(out, func(a, b Effect) int {
		return cmp.Or(cmp.Compare(a.Agent, b.Agent), cmp.Compare(a.ContainerName, b.ContainerName),
			cmp.Compare(a.ContainerID, b.ContainerID), cmp.Compare(a.File, b.File), cmp.Compare(b.Change, a.Change))
	})
	return out
}

// Granted lists, as Effects of the given kind, the files of secret that the
// bindings give the containers the broker knows (whether or not the secret
// exists): what a new version would rotate, a deletion take away, a
// restoration bring back. Read-only, O(containers granted the secret),
// no I/O under the lock.
func (b *Broker) Granted(secret, change string) []Effect {
	b.mu.Lock()
	var out []Effect
	for c := range b.bySecret[secret] {
		for _, g := range c.grants {
			if g.Secret == secret {
				out = append(out, Effect{Agent: c.agent, ContainerID: c.info.Id, ContainerName: c.info.Name, Change: change,
					Secret: g.Secret, File: g.File, Binding: g.Binding})
			}
		}
	}
	b.mu.Unlock()
	slices.SortFunc(out, func(a, b Effect) int {
		return cmp.Or(cmp.Compare(a.Agent, b.Agent), cmp.Compare(a.ContainerName, b.ContainerName),
			cmp.Compare(a.ContainerID, b.ContainerID), cmp.Compare(a.File, b.File))
	})
	return out
}
