package api

import (
	"context"
	"sort"

	"coffer/internal/broker"
)

// Cluster is what a server sharing its store with others (etcd) knows of
// the agents connected to the other servers: each server publishes its own
// (internal/server/presence.go), so that rollout status and agent ls
// answer for the whole installation from any server. Nil for a single
// server.
type Cluster interface {
	// Self is this server's address, as the agents connected to it are
	// told in agent ls.
	Self() string
	// Remote returns, by agent name, the agents connected to the other
	// live servers. A server that died is out of it within the lease of
	// its records (docs/ha.md).
	Remote(ctx context.Context) (map[string]broker.AgentPresence, error)
}

// rollout lists the holders of secret name across the installation: this
// server's own agents from its broker, the agents connected to other
// servers from what those publish. An agent connected here is answered
// from here; an agent not connected here but connected elsewhere from
// there (this broker may remember its containers from before it failed
// over); an agent connected nowhere from what this broker remembers, as on
// a single server.
func (s *Server) rollout(ctx context.Context, name string) ([]broker.Holder, error) {
	local := s.cfg.Broker.Rollout(name)
	if s.cfg.Cluster == nil {
		return local, nil
	}
	remote, err := s.cfg.Cluster.Remote(ctx)
	if err != nil {
		return nil, err
	}
	here := map[string]bool{}
	for _, n := range s.cfg.Broker.Connected() {
		here[n] = true
	}
	out := make([]broker.Holder, 0, len(local))
	for _, h := range local {
		if _, elsewhere := remote[h.Agent]; here[h.Agent] || !elsewhere {
			out = append(out, h)
		}
	}
	for agent, p := range remote {
		if here[agent] {
			continue
		}
		if _, _, ok := s.cfg.Fleet.Host(agent); !ok {
			continue // removed meanwhile
		}
		out = append(out, p.Holders(agent, name)...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Agent+out[i].ContainerName < out[j].Agent+out[j].ContainerName })
	return out, nil
}
