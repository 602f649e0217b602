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
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"coffer/internal/identity"
	"coffer/internal/policy"
	"coffer/internal/store"
)

// Sentinel errors.
var (
	ErrUnknownAgent = errors.New("unknown or revoked agent")
	ErrNotFound     = errors.New("no such agent")
	// ErrExists is returned by Enroll for a name already enrolled (or
	// being enrolled): the join token is not spent.
	ErrExists = errors.New("agent already enrolled")
	// ErrStaleCertificate is returned by Renew for the previous certificate
	// once the newest one has been used: only the newest may renew then.
	ErrStaleCertificate = errors.New("certificate superseded: only the newest certificate may renew")
)

// Agent is one enrolled agent.
type Agent struct {
	Name     string    `json:"name"`
	Enrolled time.Time `json:"enrolled"`
	// Serials of the certificates this agent may present, hex: the newest
	// first, then the one it renewed from (if any).
	Serials []string `json:"serials"`
	// NewestUsed records that the newest certificate has been presented
	// (Verify saw it). From then on the previous one still connects until
	// it expires but may no longer renew.
	NewestUsed bool      `json:"newest_used,omitempty"`
	LastSeen   time.Time `json:"last_seen,omitzero"`
	Address    string    `json:"address,omitempty"`
	// Labels were set by an admin on the join token (never by the agent);
	// bindings with a host selector match them. They are also bound into
	// every certificate the agent gets.
	Labels map[string]string `json:"labels,omitempty"`
	// Scope is the name-prefix scope of the token that made the join
	// token: the agent receives no secret outside it ("" = all).
	Scope string `json:"scope,omitempty"`
	// Attested is set for an agent enrolled by Kubernetes node
	// attestation (a projected ServiceAccount token) instead of a join
	// token: only such an agent may be enrolled again (its node was
	// reimaged) by a new attestation of the same node.
	Attested *Attested `json:"attested,omitempty"`
}

// Attested is what Kubernetes attested of an agent at its enrollment.
type Attested struct {
	Node           string `json:"node"`
	Pod            string `json:"pod"` // namespace/name
	PodUID         string `json:"pod_uid"`
	ServiceAccount string `json:"service_account"` // namespace/name
	// CredentialID is the id (JTI) of the token that enrolled the agent,
	// never the token: the same token cannot enroll it again.
	CredentialID string `json:"credential_id,omitempty"`
}

// Admission is what a join token (or a Kubernetes attestation) gives the
// agent it enrolls.
type Admission struct {
	Labels   map[string]string
	Scope    string
	Attested *Attested
}

// Config configures a Fleet.
type Config struct {
	Store   store.Backend
	CA      *identity.CA
	CertTTL time.Duration // agent certificate lifetime; default 24h
}

// Fleet is safe for concurrent use. Every change (enroll, renew, first use
// of a certificate, remove) holds one write lock from reading the record to
// updating the store and the map, so that changes never interleave: once
// Remove returns, no renewal can bring the agent back.
type Fleet struct {
	cfg Config

	wmu sync.Mutex // serializes changes; taken before mu

	mu     sync.RWMutex // guards agents for readers
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

// save stores a changed record of an enrolled agent, only if the store
// still holds one: on a store shared by several servers, a renewal here
// must not bring back an agent another server removed meanwhile.
func (f *Fleet) save(ctx context.Context, a Agent) error {
	return f.cfg.Store.Update(ctx, func(tx store.Tx) error {
		if err := mustBeEnrolled(tx, a.Name); err != nil {
			return err
		}
		b, err := json.Marshal(a)
		if err != nil {
			return err
		}
		return tx.Put(agentKey(a.Name), b)
	})
}

// get returns a copy of an agent's record.
func (f *Fleet) get(name string) (Agent, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a, ok := f.agents[name]
	if !ok {
		return Agent{}, false
	}
	c := *a
	c.Serials = slices.Clone(a.Serials)
	return c, true
}

// Enroll records a new agent and signs csrDER for it. It refuses a name
// that is already enrolled with ErrExists before calling admit, which spends
// the join token and says what the agent gets (its labels and scope); an
// error from admit is returned as it is and nothing is recorded. Two
// enrollments of one name never both succeed.
func (f *Fleet) Enroll(ctx context.Context, name string, csrDER []byte, addr string, admit func(context.Context) (Admission, error)) ([]byte, error) {
	der, _, err := f.EnrollReplacing(ctx, name, csrDER, addr, admit, nil)
	return der, err
}

// EnrollReplacing is Enroll that may replace an agent already enrolled
// under name, if mayReplace (not nil) returns nil for its record; its error
// is returned as it is otherwise. A replaced agent's certificates are all
// revoked: the new record holds only the new one. The replaced record is
// returned (nil for a new name). The check and the replacement are one
// step, also on a store shared by several servers: an agent changed
// meanwhile (renewed, removed, enrolled again) is not replaced.
func (f *Fleet) EnrollReplacing(ctx context.Context, name string, csrDER []byte, addr string,
	admit func(context.Context) (Admission, error), mayReplace func(Agent) error) ([]byte, *Agent, error) {
	if err := identity.ValidateAgentName(name); err != nil {
		return nil, nil, err
	}
	if err := identity.CheckAgentCSR(csrDER); err != nil {
		return nil, nil, err
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	old, exists := f.get(name)
	if exists {
		if mayReplace == nil {
			return nil, nil, fmt.Errorf("agent %s: %w", name, ErrExists)
		}
		if err := mayReplace(old); err != nil {
			return nil, nil, err
		}
	}
	adm, err := admit(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := policy.ValidateLabels(adm.Labels); err != nil {
		return nil, nil, err
	}
	a := Agent{Name: name, Enrolled: time.Now().UTC(), Address: addr, Scope: adm.Scope}
	if len(adm.Labels) > 0 {
		a.Labels = maps.Clone(adm.Labels)
	}
	if adm.Attested != nil {
		at := *adm.Attested
		a.Attested = &at
	}
	der, serial, err := f.sign(csrDER, a)
	if err != nil {
		return nil, nil, err
	}
	a.Serials = []string{serial}
	if exists {
		if !a.Enrolled.After(old.Enrolled) { // Apply tells a re-enrollment by its time
			a.Enrolled = old.Enrolled.Add(time.Microsecond)
		}
		err = f.replace(ctx, old, a)
	} else {
		err = f.create(ctx, a)
	}
	if err != nil {
		return nil, nil, err
	}
	f.mu.Lock()
	f.agents[name] = &a
	f.mu.Unlock()
	if exists {
		return der, &old, nil
	}
	return der, nil, nil
}

// sign issues a certificate for a's name and labels (the record's, never
// the request's).
func (f *Fleet) sign(csrDER []byte, a Agent) ([]byte, string, error) {
	der, err := f.cfg.CA.SignAgent(csrDER, identity.AgentCertOptions{Name: a.Name, Labels: a.Labels, TTL: f.cfg.CertTTL})
	if err != nil {
		return nil, "", err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, "", err
	}
	return der, serialOf(cert), nil
}

func serialOf(cert *x509.Certificate) string { return hex.EncodeToString(cert.SerialNumber.Bytes()) }

// Renew signs a new certificate for an agent that authenticated with the
// certificate of serial currentSerial (checked by Verify). Only the newest
// certificate may renew; the previous one may renew only while the newest
// has never been presented (its renewal answer was lost), and the newest is
// then replaced. The agent's new certificate and the one it renewed from
// stay valid; any other is refused from then on.
func (f *Fleet) Renew(ctx context.Context, name, currentSerial string, csrDER []byte) ([]byte, error) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	a, ok := f.get(name)
	if !ok {
		return nil, fmt.Errorf("agent %s: %w", name, ErrUnknownAgent)
	}
	switch {
	case len(a.Serials) > 0 && currentSerial == a.Serials[0]:
	case len(a.Serials) > 1 && currentSerial == a.Serials[1]:
		if a.NewestUsed {
			return nil, fmt.Errorf("agent %s: certificate %s: %w", name, currentSerial, ErrStaleCertificate)
		}
	default:
		return nil, fmt.Errorf("agent %s: certificate %s: %w", name, currentSerial, ErrUnknownAgent)
	}
	der, serial, err := f.sign(csrDER, a)
	if err != nil {
		return nil, err
	}
	a.Serials = []string{serial, currentSerial}
	a.NewestUsed = false
	if err := f.save(ctx, a); err != nil {
		return nil, err
	}
	f.mu.Lock()
	live := f.agents[name]
	live.Serials, live.NewestUsed = a.Serials, false
	f.mu.Unlock()
	return der, nil
}

// Verify checks that a verified client certificate belongs to a current
// agent, with the labels of its record, and returns the agent's name. The
// first time it sees an agent's newest certificate it records that (in the
// store too) before it answers: from then on the previous certificate may
// no longer renew.
func (f *Fleet) Verify(cert *x509.Certificate) (string, error) {
	name, err := identity.AgentName(cert)
	if err != nil {
		return "", err
	}
	labels, err := identity.AgentLabels(cert)
	if err != nil {
		return "", err
	}
	serial := serialOf(cert)
	a, ok := f.get(name)
	if !ok {
		return "", fmt.Errorf("agent %s: %w", name, ErrUnknownAgent)
	}
	if !slices.Contains(a.Serials, serial) {
		return "", fmt.Errorf("agent %s: certificate %s: %w", name, serial, ErrUnknownAgent)
	}
	if !sameLabels(labels, a.Labels) {
		return "", fmt.Errorf("agent %s: certificate %s: labels differ from the agent's: %w", name, serial, ErrUnknownAgent)
	}
	if serial == a.Serials[0] && !a.NewestUsed {
		if err := f.markUsed(name, serial); err != nil {
			return "", err
		}
	}
	return name, nil
}

func sameLabels(a, b map[string]string) bool { return maps.Equal(a, b) || len(a) == 0 && len(b) == 0 }

// markUsed records that the newest certificate, serial, has been used.
func (f *Fleet) markUsed(name, serial string) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	a, ok := f.get(name)
	switch {
	case !ok || !slices.Contains(a.Serials, serial):
		// Removed, or replaced by a renewal with the previous certificate.
		return fmt.Errorf("agent %s: certificate %s: %w", name, serial, ErrUnknownAgent)
	case serial != a.Serials[0] || a.NewestUsed:
		return nil // renewed meanwhile, or marked by another caller
	}
	a.NewestUsed = true
	// The mark must outlive a restart, or a stolen previous certificate
	// could renew after one; without the store, the connection is refused.
	if err := f.save(context.Background(), a); err != nil {
		return fmt.Errorf("agent %s: record certificate use: %w", name, err)
	}
	f.mu.Lock()
	f.agents[name].NewestUsed = true
	f.mu.Unlock()
	return nil
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

// Get returns a copy of an enrolled agent's record.
func (f *Fleet) Get(name string) (Agent, bool) {
	a, ok := f.get(name)
	if ok {
		a.Labels = maps.Clone(a.Labels)
		if a.Attested != nil {
			at := *a.Attested
			a.Attested = &at
		}
	}
	return a, ok
}

// Host returns an enrolled agent's labels and scope (ok false if unknown).
// The labels are a copy.
func (f *Fleet) Host(name string) (labels map[string]string, scope string, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a, ok := f.agents[name]
	if !ok {
		return nil, "", false
	}
	return maps.Clone(a.Labels), a.Scope, true
}

// Address returns the address an enrolled agent was last seen from ("" if
// unknown or never seen).
func (f *Fleet) Address(name string) string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if a, ok := f.agents[name]; ok {
		return a.Address
	}
	return ""
}

// List returns the agents by name.
func (f *Fleet) List() []Agent {
	f.mu.RLock()
	out := make([]Agent, 0, len(f.agents))
	for _, a := range f.agents {
		c := *a
		c.Serials = slices.Clone(a.Serials)
		c.Labels = maps.Clone(a.Labels)
		out = append(out, c)
	}
	f.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Remove revokes an agent: once it returns, none of its certificates
// verifies or renews, and its record is gone from the store.
func (f *Fleet) Remove(ctx context.Context, name string) error {
	return f.RemoveIf(ctx, name, nil)
}

// RemoveIf is Remove for an agent that match (if not nil) accepts; for one
// it refuses it fails with ErrNotFound, as for an unknown name. The check
// and the removal are one step: a re-enrolled agent of the same name is
// checked, not the one seen before.
func (f *Fleet) RemoveIf(ctx context.Context, name string, match func(Agent) bool) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	a, ok := f.get(name)
	if !ok || match != nil && !match(a) {
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
