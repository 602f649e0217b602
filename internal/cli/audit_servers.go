package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"coffer/internal/audit"
)

// auditServer is one entry of GET /v1/audit/servers: a server's chain.
type auditServer struct {
	ID         string     `json:"id"`
	Address    string     `json:"address"`
	Head       audit.Head `json:"head"`
	Self       bool       `json:"self"`
	ReplacedBy string     `json:"replaced_by,omitempty"`

	peers *http.Client // trusts the installation's CA only
}

// auditChains returns the installation's audit chains when its servers
// share a store and there is more than one; nil otherwise (one server, or
// a server too old to list them).
func auditChains(cl *client) ([]auditServer, error) {
	var r struct {
		Servers []auditServer `json:"servers"`
		CAPEM   string        `json:"ca_pem"`
	}
	err := cl.do("GET", "/v1/audit/servers", nil, &r)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == 404 {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(r.Servers) <= 1 {
		return nil, nil
	}
	// The other servers must show a certificate of the installation's CA,
	// whatever this client trusts otherwise: the addresses come from the
	// store, and the token goes to them.
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(r.CAPEM)) {
		return nil, errors.New("GET /v1/audit/servers: no CA certificate in the answer")
	}
	peers := &http.Client{Timeout: cl.http.Timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}, ForceAttemptHTTP2: true}}
	for i := range r.Servers {
		r.Servers[i].peers = peers
	}
	return r.Servers, nil
}

// at returns a client for the server of chain s: cl itself for the
// server answering, else one with the same token and CA at its address.
func (s auditServer) at(cl *client) *client {
	if s.Self {
		return cl
	}
	c := *cl
	c.base = "https://" + s.Address
	c.http = s.peers
	return &c
}

// lostChain says why the records of a replaced chain cannot be read.
func (s auditServer) lost() string {
	return fmt.Sprintf("server %s's audit chain (head %s) is lost: server %s took its address %s since (restarted with an empty data dir); its records were in the old data dir",
		s.ID, s.Head, s.ReplacedBy, s.Address)
}

// mergedAudit queries every chain with q and merges the records in time
// order (then by server and seq); with a limit, the newest limit of all.
// A chain it cannot read is named in the error, after the records of the
// others.
func mergedAudit(cl *client, chains []auditServer, q url.Values, limit int) ([]audit.Event, error) {
	var all []audit.Event
	var missing []string
	for _, s := range chains {
		if s.ReplacedBy != "" {
			missing = append(missing, s.lost())
			continue
		}
		var evs []audit.Event
		if err := s.at(cl).do("GET", "/v1/audit?"+q.Encode(), nil, &evs); err != nil {
			missing = append(missing, fmt.Sprintf("server %s at %s: %v", s.ID, s.Address, err))
			continue
		}
		all = append(all, evs...)
	}
	sort.SliceStable(all, func(i, j int) bool {
		a, b := all[i], all[j]
		switch {
		case !a.Time.Equal(b.Time):
			return a.Time.Before(b.Time)
		case a.Server != b.Server:
			return a.Server < b.Server
		}
		return a.Seq < b.Seq
	})
	if limit > 0 && len(all) > limit {
		all = all[len(all)-limit:]
	}
	if len(missing) > 0 {
		return all, &ExitError{Code: ExitFailure, Err: errors.New("records missing: " + strings.Join(missing, "; "))}
	}
	return all, nil
}

// verifyChains verifies every chain through its own server, each up to
// the head anchored in the store, and prints one verdict per chain. A lost
// chain or a server that cannot be reached fails the check.
func verifyChains(w io.Writer, o *output, cl *client, chains []auditServer) error {
	var results []verifyResult
	failed := 0
	for _, s := range chains {
		r := verifyResult{Server: s.ID}
		switch {
		case s.ReplacedBy != "":
			r.Error = s.lost()
		default:
			path := "/v1/audit/verify"
			if s.Head.Seq > 0 && !s.Self {
				path += "?head=" + url.QueryEscape(s.Head.String())
			}
			if err := s.at(cl).do("GET", path, nil, &r); err != nil {
				r = verifyResult{Server: s.ID, Error: fmt.Sprintf("server at %s: %v", s.Address, err)}
			}
			r.Server = s.ID
		}
		if !r.OK {
			failed++
		}
		results = append(results, r)
	}
	if o.structured() {
		if err := o.print(w, results, nil, nil); err != nil {
			return err
		}
	} else {
		for _, r := range results {
			if r.OK {
				fmt.Fprintf(w, "ok: server %s: %d records, head %d:%s\n", r.Server, r.Records, r.Records, r.Head)
			} else {
				fmt.Fprintf(w, "FAILED: server %s: %s\n", r.Server, r.Error)
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d audit chains failed verification", failed, len(results))
	}
	return nil
}
