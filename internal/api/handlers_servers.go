package api

import (
	"net/http"

	"coffer/internal/audit"
)

// AuditServer is one server's audit chain in an installation whose servers
// share a store: each server keeps its own trail, anchored in the store.
type AuditServer struct {
	ID      string `json:"id"`      // the server's id; "" for a single server
	Address string `json:"address"` // where its API answers, host:port
	// Head is the chain's head anchored in the store at its last group
	// commit (for this server: its live head).
	Head audit.Head `json:"head"`
	Self bool       `json:"self"` // the server answering
	// ReplacedBy is set when another server registered later at the same
	// address (a server restarted with an empty data dir): this chain's
	// records were in the data dir it lost.
	ReplacedBy string `json:"replaced_by,omitempty"`
}

// AuditServersResponse is GET /v1/audit/servers's answer.
type AuditServersResponse struct {
	Servers []AuditServer `json:"servers"`
	// CAPEM is the installation's CA: a client that asks the other
	// servers trusts only certificates it signed, so that an address
	// planted in the store cannot collect its token.
	CAPEM string `json:"ca_pem"`
}

// auditServers lists the installation's audit chains, so that a client
// can merge and verify them all (coffer audit ls, coffer audit verify).
func (s *Server) auditServers(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	if s.cfg.AuditServers == nil {
		return http.StatusOK, AuditServersResponse{Servers: []AuditServer{{Address: r.Host, Head: s.cfg.Audit.Head(), Self: true}}, CAPEM: string(s.cfg.CAPEM)}, nil
	}
	list, err := s.cfg.AuditServers(r.Context())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, AuditServersResponse{Servers: list, CAPEM: string(s.cfg.CAPEM)}, nil
}
