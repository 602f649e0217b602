package lease

import (
	"context"
	"maps"
	"slices"

	"coffer/internal/catalog"
	"coffer/internal/keystore"
	"coffer/internal/linker"
)

// Handles reports whether from (UPSTREAM:ITEM[#KEY]) names an issuing
// upstream of this server.
func (m *Manager) Handles(from string) bool { return m.cfg.Issuers.Has(from) }

// Probe checks, when a secret is linked, that from names a path that
// issues credentials (and has #KEY in them): it issues one lease and
// revokes it at once, so that a mistake is a clear error at link time
// naming the upstream and the item, with nothing changed. Errors are
// keystore errors (never a value).
func (m *Manager) Probe(ctx context.Context, from string) (catalog.Link, error) {
	ref, is, err := m.cfg.Issuers.ParseRef(from)
	if err != nil {
		return catalog.Link{}, err
	}
	rctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	l, err := is.Issue(rctx, ref.Item)
	cancel()
	if err != nil {
		return catalog.Link{}, err
	}
	var pickErr error
	if ref.Key != "" {
		v, err := keystore.Pick(l.Value, ref.Key)
		v.Zero()
		if err != nil {
			pickErr = &keystore.Error{Upstream: ref.Upstream, Item: ref.Item, Err: err}
		}
	}
	l.Value.Zero()
	rctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), m.cfg.Timeout)
	if err := is.Revoke(rctx, l.ID); err != nil {
		m.log.Warn("revoking the lease issued to check a link failed; it ends at its TTL", "lease_id", l.ID, "err", err)
	}
	cancel()
	if pickErr != nil {
		return catalog.Link{}, pickErr
	}
	return catalog.Link{From: ref.String(), Upstream: ref.Upstream, Item: ref.Item, Key: ref.Key, Dynamic: true}, nil
}

// LinkState reports where a dynamic secret stands with its upstream:
// degraded while issuing from it fails.
func (m *Manager) LinkState(lk catalog.Link) linker.LinkStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cfg.Issuers[lk.Upstream] == nil {
		return linker.LinkStatus{State: "degraded", Error: "upstream " + lk.Upstream + " is not configured on this server: no container gets a lease"}
	}
	if e := m.upErr[lk.Upstream]; e != "" {
		return linker.LinkStatus{State: "degraded", Error: e}
	}
	return linker.LinkStatus{State: "ok"}
}

// Status reports every issuing upstream's health, by name: degraded while
// issuing from it fails; linked_items counts the dynamic secrets linked to
// it.
func (m *Manager) Status() []linker.UpstreamStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	linked := map[string]map[string]bool{}
	for _, lk := range m.links {
		if linked[lk.Upstream] == nil {
			linked[lk.Upstream] = map[string]bool{}
		}
		linked[lk.Upstream][lk.Item] = true
	}
	out := []linker.UpstreamStatus{}
	for _, name := range slices.Sorted(maps.Keys(m.cfg.Issuers)) {
		st := linker.UpstreamStatus{Name: name, State: "ok", Linked: len(linked[name])}
		if e := m.upErr[name]; e != "" {
			st.State, st.Error = "degraded", e
		}
		out = append(out, st)
	}
	return out
}

// Degraded lists, one line each, the issuing upstreams that are degraded.
func (m *Manager) Degraded() []string {
	var out []string
	for _, s := range m.Status() {
		if s.State == "degraded" {
			out = append(out, "upstream "+s.Name+" degraded: "+s.Error)
		}
	}
	return out
}
