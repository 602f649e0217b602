// Package fleet keeps the agents a server knows: enrollment with a one-time
// join token, the certificates issued to each, revocation, and when each was
// last seen.
package fleet

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"coffer/internal/identity"
	"coffer/internal/store"
)

// Sentinel errors.
var (
	ErrUnknownAgent = errors.New("unknown or revoked agent")
	ErrNotFound     = errors.New("no such agent")
)

// Agent is one enrolled agent.
type Agent struct {
	Name     string    `json:"name"`
	Enrolled time.Time `json:"enrolled"`
	// Serials of the certificates this agent may present (current and the
	// one it renewed from), hex.
	Serials  []string  `json:"serials"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Address  string    `json:"address,omitempty"`
	// Labels were set by an admin on the join token (never by the agent);
	// bindings with a host selector match them.
	Labels map[string]string `json:"labels,omitempty"`
	// Scope is the name-prefix scope of the token that made the join
	// token: the agent receives no secret outside it ("" = all).
	Scope string `json:"scope,omitempty"`
}

// Config configures a Fleet.
type Config struct {
	Store   store.Backend
	CA      *identity.CA
	CertTTL time.Duration // agent certificate lifetime; default 24h
}

// Fleet is safe for concurrent use.
type Fleet struct {
	cfg Config

	mu     sync.Mutex
	agents map[string]*Agent
}

func agentKey(name string) string { return "agent/" + name }

// Open loads the enrolled agents.
func Open(ctx context.Context, cfg Config) (*Fleet, error) {
	if cfg.CertTTL <= 0 {
		cfg.CertTTL = 24 * time.Hour
	}
	f := &Fleet{cfg: cfg, agents: map[string]*Agent{}}
	err := cfg.Store.View(ctx, func(tx store.Tx) error {
		return tx.List("agent/", func(k string, v []byte) error {
			var a Agent
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("%s: %w: %v", k, store.ErrCorrupt, err)
			}
			f.agents[a.Name] = &a
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load agents: %w", err)
	}
	return f, nil
}

func (f *Fleet) save(ctx context.Context, a Agent) error {
	return f.cfg.Store.Update(ctx, func(tx store.Tx) error {
		b, err := json.Marshal(a)
		if err != nil {
			return err
		}
		return tx.Put(agentKey(a.Name), b)
	})
}

// Enroll signs csrDER for agent name (the join token was checked by the
// caller) and records the agent. Enrolling an existing name replaces its
// certificates: the old ones stop working.
func (f *Fleet) Enroll(ctx context.Context, name string, csrDER []byte, addr string) ([]byte, error) {
	if err := identity.ValidateAgentName(name); err != nil {
		return nil, err
	}
	der, serial, err := f.sign(csrDER, name)
	if err != nil {
		return nil, err
	}
	a := Agent{Name: name, Enrolled: time.Now().UTC(), Serials: []string{serial}, Address: addr}
	if err := f.save(ctx, a); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.agents[name] = &a
	f.mu.Unlock()
	return der, nil
}

func (f *Fleet) sign(csrDER []byte, name string) ([]byte, string, error) {
	der, err := f.cfg.CA.SignAgentCSR(csrDER, name, f.cfg.CertTTL)
	if err != nil {
		return nil, "", err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, "", err
	}
	return der, hex.EncodeToString(cert.SerialNumber.Bytes()), nil
}

// Renew signs a new certificate for an authenticated agent; the certificate
// it authenticated with stays valid until it expires, older ones do not.
func (f *Fleet) Renew(ctx context.Context, name, currentSerial string, csrDER []byte) ([]byte, error) {
	der, serial, err := f.sign(csrDER, name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	a, ok := f.agents[name]
	if !ok {
		f.mu.Unlock()
		return nil, ErrUnknownAgent
	}
	next := *a
	next.Serials = []string{serial, currentSerial}
	f.mu.Unlock()
	if err := f.save(ctx, next); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.agents[name] = &next
	f.mu.Unlock()
	return der, nil
}

// Verify checks that a verified client certificate belongs to a current
// agent and returns the agent's name.
func (f *Fleet) Verify(cert *x509.Certificate) (string, error) {
	name, err := identity.AgentName(cert)
	if err != nil {
		return "", err
	}
	serial := hex.EncodeToString(cert.SerialNumber.Bytes())
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.agents[name]
	if !ok {
		return "", fmt.Errorf("agent %s: %w", name, ErrUnknownAgent)
	}
	for _, s := range a.Serials {
		if s == serial {
			return name, nil
		}
	}
	return "", fmt.Errorf("agent %s: certificate %s: %w", name, serial, ErrUnknownAgent)
}

// Seen records that an agent is connected from addr.
func (f *Fleet) Seen(name, addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a, ok := f.agents[name]; ok {
		a.LastSeen = time.Now().UTC()
		if addr != "" {
			a.Address = addr
		}
	}
}

// Host returns an enrolled agent's labels and scope (ok false if unknown).
func (f *Fleet) Host(name string) (labels map[string]string, scope string, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.agents[name]
	if !ok {
		return nil, "", false
	}
	return a.Labels, a.Scope, true
}

// List returns the agents by name.
func (f *Fleet) List() []Agent {
	f.mu.Lock()
	out := make([]Agent, 0, len(f.agents))
	for _, a := range f.agents {
		out = append(out, *a)
	}
	f.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Remove revokes an agent: its certificates are refused from now on.
func (f *Fleet) Remove(ctx context.Context, name string) error {
	f.mu.Lock()
	_, ok := f.agents[name]
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("agent %s: %w", name, ErrNotFound)
	}
	if err := f.cfg.Store.Update(ctx, func(tx store.Tx) error { return tx.Delete(agentKey(name)) }); err != nil {
		return err
	}
	f.mu.Lock()
	delete(f.agents, name)
	f.mu.Unlock()
	return nil
}
