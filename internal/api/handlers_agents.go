package api

import (
	"net/http"
	"time"

	"coffer/internal/authz"
	"coffer/internal/broker"
	"coffer/internal/fleet"
)

// AgentView is an agent with its live state.
type AgentView struct {
	Name       string            `json:"name"`
	Address    string            `json:"address,omitempty"`
	Enrolled   time.Time         `json:"enrolled"`
	LastSeen   time.Time         `json:"last_seen,omitzero"`
	Connected  bool              `json:"connected"`
	Containers int               `json:"containers"`
	Labels     map[string]string `json:"labels,omitempty"`
	Scope      string            `json:"scope,omitempty"`
	// Server is, on several servers sharing a store, the address of the
	// server it is connected to.
	Server string `json:"server,omitempty"`

	// What the broker saw the agent do that a well-behaved agent does not:
	// reports_limited, id_conflicts, last_anomaly, last_anomaly_reason.
	broker.Anomalies
}

// listAgents lists the agents whose scope lies within the principal's.
func (s *Server) listAgents(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	connected := map[string]bool{}
	counts := map[string]int{}
	anomalies := map[string]broker.Anomalies{}
	var remote map[string]broker.AgentPresence // connected to other servers
	if s.cfg.Cluster != nil {
		var err error
		if remote, err = s.cfg.Cluster.Remote(r.Context()); err != nil {
			return 0, nil, err
		}
	}
	if s.cfg.Broker != nil {
		for _, n := range s.cfg.Broker.Connected() {
			connected[n] = true
		}
		counts = s.cfg.Broker.Containers()
		anomalies = s.cfg.Broker.Anomalies()
	}
	out := []AgentView{}
	for _, a := range s.cfg.Fleet.List() {
		if !authz.ScopeWithin(r.p, a.Scope) {
			continue
		}
		v := AgentView{Name: a.Name, Address: a.Address, Enrolled: a.Enrolled, LastSeen: a.LastSeen, Connected: connected[a.Name], Containers: counts[a.Name],
			Labels: a.Labels, Scope: a.Scope}
		v.Anomalies = anomalies[a.Name]
		if p, ok := remote[a.Name]; ok && !v.Connected {
			v.Connected, v.Containers, v.Server = true, len(p.Containers)+p.Omitted, p.Server
			if p.Address != "" {
				v.Address = p.Address
			}
		} else if v.Connected && s.cfg.Cluster != nil {
			v.Server = s.cfg.Cluster.Self()
		}
		if v.Connected {
			v.LastSeen = time.Now().UTC()
		}
		out = append(out, v)
	}
	return http.StatusOK, out, nil
}

// revokeAgent removes an agent whose scope lies within the principal's; one
// outside it is answered exactly like an unknown name.
func (s *Server) revokeAgent(r *request) (int, any, error) {
	name := r.PathValue("name")
	if err := r.authorize("agent:"+name, ""); err != nil {
		return 0, nil, err
	}
	within := func(a fleet.Agent) bool { return authz.ScopeWithin(r.p, a.Scope) }
	if err := s.cfg.Fleet.RemoveIf(r.Context(), name, within); err != nil {
		return 0, nil, err
	}
	if s.cfg.Broker != nil {
		s.cfg.Broker.Disconnect(name)
	}
	return http.StatusNoContent, nil, nil
}
