package lease

import (
	"context"
	"encoding/json"
	"time"

	"coffer/internal/broker"
	"coffer/internal/store"
)

// Leases are remembered in the store (Config.Store) by id, with their
// container and expiry, never their credentials: a server that restarts
// cannot renew them (it does not have their values to hand out again), so
// each container gets a new lease, and the old one, a leftover, is revoked
// once its container holds the new one (after RotateGrace, so that the
// container can switch), or after LeftoverGrace if the container does not
// come back. Without a store, leftovers end at their TTL.

const recordPrefix = "lease/"

// record is what the store keeps of a lease.
type record struct {
	ID        string    `json:"id"`
	Upstream  string    `json:"upstream"`
	Item      string    `json:"item"`
	Container string    `json:"container_id"`
	Name      string    `json:"container"`
	Agent     string    `json:"agent"`
	Expires   time.Time `json:"expires"`
	Owner     string    `json:"owner,omitempty"` // Config.Owner of the server that holds it
}

func (m *Manager) remember(e *entry, l *issued) {
	if m.cfg.Store == nil {
		return
	}
	b, _ := json.Marshal(record{ID: l.id, Upstream: e.upstream, Item: e.item, Container: e.holder.ContainerID,
		Name: e.holder.Container, Agent: e.holder.Agent, Expires: l.expires.UTC(), Owner: m.cfg.Owner})
	if err := m.cfg.Store.Update(context.Background(), func(tx store.Tx) error { return tx.Put(recordPrefix+l.id, b) }); err != nil {
		m.log.Error("remembering a lease failed; after a restart it ends at its TTL", "lease_id", l.id, "err", err)
	}
}

func (m *Manager) forget(id string) {
	if m.cfg.Store == nil {
		return
	}
	if err := m.cfg.Store.Update(context.Background(), func(tx store.Tx) error { return tx.Delete(recordPrefix + id) }); err != nil {
		m.log.Error("forgetting a revoked lease failed", "lease_id", id, "err", err)
	}
}

// loadLeftovers reads the leases of a previous run and starts one
// goroutine per leftover that revokes it when its time comes.
func (m *Manager) loadLeftovers(ctx context.Context) error {
	if m.cfg.Store == nil {
		return nil
	}
	var recs []record
	err := m.cfg.Store.View(ctx, func(tx store.Tx) error {
		return tx.List(recordPrefix, func(_ string, v []byte) error {
			var r record
			// Only this server's: with several servers on one store, the
			// others' leases are theirs to keep.
			if json.Unmarshal(v, &r) == nil && r.ID != "" && r.Owner == m.cfg.Owner {
				recs = append(recs, r)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range recs {
		k := entryKey(r.Container, r.Upstream, r.Item)
		ch := make(chan string, 1)
		m.leftovers[k] = append(m.leftovers[k], ch)
		m.wg.Add(1)
		go m.leftover(r, ch)
	}
	return nil
}

// replaced tells the leftovers of e's key that e holds lease id now.
// Callers hold m.mu.
func (m *Manager) replacedLocked(e *entry, id string) {
	for _, ch := range m.leftovers[e.key] {
		ch <- id
	}
	delete(m.leftovers, e.key)
}

func (m *Manager) leftover(r record, replaced <-chan string) {
	defer m.wg.Done()
	e := &entry{holder: broker.LeaseHolder{ContainerID: r.Container, Container: r.Name, Agent: r.Agent}, upstream: r.Upstream, item: r.Item,
		secrets: map[string]string{}}
	l := &issued{id: r.ID, expires: r.Expires}
	if !time.Now().Before(r.Expires) {
		m.forget(r.ID) // ended at its TTL while the server was away
		return
	}
	reason := "server restarted; its container did not come back"
	wait := time.NewTimer(min(m.cfg.LeftoverGrace, time.Until(r.Expires)))
	defer wait.Stop()
	select {
	case id := <-replaced:
		reason = "server restarted; replaced by lease " + id
		t := time.NewTimer(min(m.cfg.RotateGrace, time.Until(r.Expires)))
		select {
		case <-t.C:
		case <-m.ctx.Done():
			t.Stop()
			return
		}
	case <-wait.C:
	case <-m.ctx.Done():
		return // still a leftover at the next start
	}
	is := m.cfg.Issuers[r.Upstream]
	if is == nil {
		m.log.Warn("a leftover lease's upstream is not configured any more; it ends at its TTL", "lease_id", r.ID, "upstream", r.Upstream)
		m.forget(r.ID)
		return
	}
	m.revoke(e, is, l, reason)
}
