// Package lease gives every container its own credentials for a dynamic
// linked secret: a secret linked to an upstream that issues credentials on
// request (keystore.Issuer, type vault-dynamic: Vault's database secrets
// engine makes a database user per lease).
//
// The broker asks for a container's lease when it computes the
// container's files (Manager.Lease, never blocking); the Manager issues it
// on a goroutine of its own and tells the broker when it is there
// (Broker.LeaseChanged), which then pushes it as a file whose version is
// unique to that lease. While the container runs, the lease is renewed at
// half its TTL; one that cannot be renewed any more (its max TTL, or the
// upstream forgot it) is replaced by a new lease: a rotation for that
// container only. When the container stops, loses the binding, or the
// secret is unlinked, the lease is revoked at once (retried with backoff
// until the upstream confirms or the lease has expired anyway).
//
// Secrets linked to keys of the same item (#username, #password) share the
// container's lease of that item, so that they always match.
//
// Every issue, revocation and failed renewal is audited (lease.issue,
// lease.revoke, lease.renew) with the lease id, the container's id and
// name, its agent and the secret: never the credentials. Leases are held
// in memory only: on a restart of the server every container gets a new
// lease (its old one is no longer renewed and ends at its TTL).
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"coffer/internal/audit"
	"coffer/internal/broker"
	"coffer/internal/catalog"
	"coffer/internal/keystore"
	"coffer/internal/secret"
	"coffer/internal/store"
)

// Catalog is what the Manager needs of the catalog.
type Catalog interface {
	Linked(ctx context.Context) ([]catalog.SecretMeta, error)
	Show(ctx context.Context, name string) (catalog.SecretMeta, error)
}

// Auditor records lease events.
type Auditor interface {
	Append(ctx context.Context, e audit.Event) (audit.Event, error)
}

// Config configures a Manager.
type Config struct {
	Issuers keystore.Issuers
	Catalog Catalog
	Audit   Auditor
	Logger  *slog.Logger
	// Timeout bounds each call to an issuer (default 30 s).
	Timeout time.Duration
	// RetryMin and RetryMax bound the backoff between failed issues,
	// renewals and revocations (defaults 1 s and 30 s; jittered).
	RetryMin, RetryMax time.Duration
	// RotateGrace is how long a replaced lease is kept after its
	// successor is issued, so that the container can switch (default
	// 30 s, never past the old lease's expiry).
	RotateGrace time.Duration
	// MaxPerAgent caps the leases held for the containers of one agent
	// (default 1,000): an agent that reports more containers gets no more
	// credentials, and that is audited.
	MaxPerAgent int
	// Store, if set, remembers lease ids (never credentials) so that the
	// leases of a previous run are revoked after a restart (persist.go).
	Store store.Backend
	// Owner names this server among several that share one store (its
	// records are its own; a restart handles only those). "" for a single
	// server.
	Owner string
	// LeftoverGrace is how long a lease of a previous run is kept for a
	// container that has not come back (default 10 minutes).
	LeftoverGrace time.Duration
}

// Manager is safe for concurrent use. It implements broker.Leases.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	ctx    context.Context // ends with Close
	stop   context.CancelFunc
	wg     sync.WaitGroup
	notify atomic.Pointer[func(containerID string)]

	mu       sync.Mutex
	links    map[string]catalog.Link // dynamic secrets by name
	leases   map[string]*entry       // by entryKey
	byCtr    map[string]map[string]*entry
	perAgent map[string]int
	refused  map[string]bool   // agent → an over-limit refusal is audited
	upErr    map[string]string // upstream → why its last issue failed ("" ok)
	// leftovers are leases of a previous run by entryKey, each told the id
	// of the lease that replaces it (persist.go).
	leftovers map[string][]chan string
}

var _ broker.Leases = (*Manager)(nil)

// versions numbers leases: a version is never reused (in this process;
// the high bits are the process's start time, so not across restarts
// either).
var versions atomic.Uint64

func init() { versions.Store(uint64(time.Now().Unix()) << 20) } // < 2^53: exact in JSON numbers too

// entry is one container's lease of one upstream item, shared by the
// container's secrets linked to that item.
type entry struct {
	key      string
	holder   broker.LeaseHolder
	upstream string
	item     string
	secrets  map[string]string // secret → #KEY ("" whole)
	cancel   context.CancelFunc
	released string // why it was released; "" while held

	// Set once issued (under Manager.mu).
	id      string
	version uint64
	value   secret.Value
	picked  map[string]secret.Value // by key
	expires time.Time
}

func entryKey(containerID, upstream, item string) string {
	return containerID + "\x00" + upstream + "\x00" + item
}

// New makes a Manager; Load fills in the dynamic secrets.
func New(cfg Config) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(30*time.Second, cfg.RetryMin)
	}
	if cfg.RotateGrace <= 0 {
		cfg.RotateGrace = 30 * time.Second
	}
	if cfg.MaxPerAgent <= 0 {
		cfg.MaxPerAgent = 1000
	}
	if cfg.LeftoverGrace <= 0 {
		cfg.LeftoverGrace = 10 * time.Minute
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Manager{
		cfg: cfg, log: cfg.Logger, ctx: ctx, stop: stop,
		links: map[string]catalog.Link{}, leases: map[string]*entry{}, byCtr: map[string]map[string]*entry{},
		perAgent: map[string]int{}, refused: map[string]bool{}, upErr: map[string]string{},
		leftovers: map[string][]chan string{},
	}
}

// SetNotify sets the function told that a container's lease was issued or
// replaced (Broker.LeaseChanged).
func (m *Manager) SetNotify(f func(containerID string)) { m.notify.Store(&f) }

// Load reads the dynamic linked secrets from the catalog, and the leases
// of a previous run from the store.
func (m *Manager) Load(ctx context.Context) error {
	metas, err := m.cfg.Catalog.Linked(ctx)
	if err != nil {
		return fmt.Errorf("dynamic linked secrets: %w", err)
	}
	if err := m.loadLeftovers(ctx); err != nil {
		return fmt.Errorf("leases of the previous run: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, meta := range metas {
		if meta.Link.Dynamic {
			m.links[meta.Name] = *meta.Link
		}
	}
	return nil
}

// Changed is (with the broker's) the catalog's OnChange hook; call it
// before the broker's. A dynamic secret linked, relinked, unlinked,
// deleted or restored is looked up again; leases of a secret that is no
// longer linked to the same item are released.
func (m *Manager) Changed(ch catalog.Change) {
	if ch.Kind != catalog.SecretPut && ch.Kind != catalog.SecretDeleted {
		return
	}
	meta, err := m.cfg.Catalog.Show(m.ctx, ch.Secret)
	var now *catalog.Link
	switch {
	case err == nil && meta.Link != nil && meta.Link.Dynamic:
		now = meta.Link
	case err != nil && !errors.Is(err, catalog.ErrNotFound):
		m.log.Error("looking up a changed secret; its leases are kept", "secret", ch.Secret, "err", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old, had := m.links[ch.Secret]
	relinked := ""
	if err == nil && meta.Link != nil {
		relinked = meta.Link.From
	}
	if now != nil {
		m.links[ch.Secret] = *now
	} else {
		delete(m.links, ch.Secret)
	}
	if had && (now == nil || now.Upstream != old.Upstream || now.Item != old.Item || now.Key != old.Key) {
		reason := "secret unlinked or deleted"
		if relinked != "" {
			reason = "secret relinked to " + relinked
		}
		for _, e := range slices.Collect(maps.Values(m.leases)) {
			if _, ok := e.secrets[ch.Secret]; ok {
				m.releaseLocked(e, ch.Secret, reason)
			}
		}
	}
}

// Dynamic implements broker.Leases.
func (m *Manager) Dynamic(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.links[name]
	return ok
}

// Lease implements broker.Leases: it never blocks on the issuer.
func (m *Manager) Lease(h broker.LeaseHolder, name string) (uint64, secret.Value, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	lk, ok := m.links[name]
	if !ok || m.ctx.Err() != nil {
		return 0, nil, false
	}
	k := entryKey(h.ContainerID, lk.Upstream, lk.Item)
	e := m.leases[k]
	if e == nil {
		is := m.cfg.Issuers[lk.Upstream]
		if is == nil {
			return 0, nil, false // the upstream is not configured on this server (any more)
		}
		if m.perAgent[h.Agent] >= m.cfg.MaxPerAgent {
			if !m.refused[h.Agent] {
				m.refused[h.Agent] = true
				m.log.Warn("lease refused: the agent's containers hold the most leases allowed", "agent", h.Agent, "max", m.cfg.MaxPerAgent)
				ev := audit.Event{Actor: "agent:" + h.Agent, Action: "lease.issue", Object: "container:" + h.ContainerID, Result: audit.ResultDenied,
					Details: details(&entry{holder: h, upstream: lk.Upstream, item: lk.Item, secrets: map[string]string{name: lk.Key}},
						"error", fmt.Sprintf("the agent's containers hold %d leases, the most allowed", m.cfg.MaxPerAgent))}
				go m.record(ev) // never I/O under the lock (the broker's is held too)
			}
			return 0, nil, false
		}
		ctx, cancel := context.WithCancel(m.ctx)
		e = &entry{key: k, holder: h, upstream: lk.Upstream, item: lk.Item, secrets: map[string]string{}, cancel: cancel}
		m.leases[k] = e
		if m.byCtr[h.ContainerID] == nil {
			m.byCtr[h.ContainerID] = map[string]*entry{}
		}
		m.byCtr[h.ContainerID][k] = e
		m.perAgent[h.Agent]++
		m.wg.Add(1)
		go m.run(ctx, e, is)
	}
	e.secrets[name] = lk.Key
	if e.value == nil {
		return 0, nil, false
	}
	v, ok := m.pickLocked(e, lk.Key)
	if !ok {
		return 0, nil, false
	}
	return e.version, v, true
}

// pickLocked returns the value of key of e's lease (the whole value for
// ""), picking it once per lease.
func (m *Manager) pickLocked(e *entry, key string) (secret.Value, bool) {
	if key == "" {
		return e.value, true
	}
	if v, ok := e.picked[key]; ok {
		return v, true
	}
	v, err := keystore.Pick(e.value, key)
	if err != nil {
		m.log.Warn("a dynamic secret's key is not in its lease's credentials", "upstream", e.upstream, "item", e.item, "key", key, "lease_id", e.id)
		return nil, false
	}
	if e.picked == nil {
		e.picked = map[string]secret.Value{}
	}
	e.picked[key] = v
	return v, true
}

// Peek implements broker.Leases.
func (m *Manager) Peek(containerID, name string) (uint64, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	lk, ok := m.links[name]
	if !ok {
		return 0, ""
	}
	if e := m.leases[entryKey(containerID, lk.Upstream, lk.Item)]; e != nil {
		return e.version, e.id
	}
	return 0, ""
}

// Release implements broker.Leases.
func (m *Manager) Release(containerID, name, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.byCtr[containerID] {
		if _, ok := e.secrets[name]; ok {
			m.releaseLocked(e, name, reason)
		}
	}
}

// releaseLocked drops name from e; the last secret gone, the lease is
// revoked by its goroutine.
func (m *Manager) releaseLocked(e *entry, name, reason string) {
	delete(e.secrets, name)
	if len(e.secrets) > 0 || e.released != "" {
		return
	}
	e.released = reason
	delete(m.leases, e.key)
	if c := m.byCtr[e.holder.ContainerID]; c != nil {
		delete(c, e.key)
		if len(c) == 0 {
			delete(m.byCtr, e.holder.ContainerID)
		}
	}
	if m.perAgent[e.holder.Agent]--; m.perAgent[e.holder.Agent] <= 0 {
		delete(m.perAgent, e.holder.Agent)
		delete(m.refused, e.holder.Agent)
	}
	e.cancel()
}

// Close stops every lease's goroutine without revoking: running
// containers keep their credentials until their leases' TTL (the server is
// stopping, not the containers). Revocations in progress get until ctx
// ends.
func (m *Manager) Close(ctx context.Context) error {
	m.stop()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("lease manager: %w", ctx.Err())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.leases {
		zeroLocked(e)
	}
	return nil
}

func zeroLocked(e *entry) {
	e.value.Zero()
	for _, v := range e.picked {
		v.Zero()
	}
	e.value, e.picked = nil, nil
}

// Holding counts the leases held now.
func (m *Manager) Holding() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.leases)
}

// run is the life of one entry: issue, renew, replace when renewal is no
// longer possible, and revoke once released.
func (m *Manager) run(ctx context.Context, e *entry, is keystore.Issuer) {
	defer m.wg.Done()
	var prev *issued // the lease being replaced
	for {
		cur, ok := m.issueRetrying(ctx, e, is, prev)
		if !ok {
			if reason := m.releaseReason(e); prev != nil && reason != "" {
				m.revoke(e, is, prev, reason)
			}
			return
		}
		if prev != nil {
			old := prev
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				wait := min(m.cfg.RotateGrace, time.Until(old.expires))
				select {
				case <-time.After(wait):
				case <-ctx.Done():
				}
				m.revoke(e, is, old, "replaced by lease "+cur.id)
			}()
		}
		if m.keep(ctx, e, is, cur) {
			prev = cur
			continue // rotate: issue a new lease
		}
		if reason := m.releaseReason(e); reason != "" {
			m.revoke(e, is, cur, reason)
		} // else the server is stopping: the container keeps it until its TTL
		return
	}
}

// issued is one lease of an entry, as its goroutine knows it.
type issued struct {
	id        string
	version   uint64
	ttl       time.Duration
	renewable bool
	expires   time.Time
}

func (m *Manager) releaseReason(e *entry) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return e.released
}

// issueRetrying issues a lease for e, retrying with backoff, and installs
// it. It returns false when e was released or the manager closed
// meanwhile (a lease issued just then is revoked, or left to its TTL on
// close).
func (m *Manager) issueRetrying(ctx context.Context, e *entry, is keystore.Issuer, prev *issued) (*issued, bool) {
	wait := m.cfg.RetryMin
	failing := false
	for {
		// The request itself is not cancelled with ctx: a lease Vault
		// made must be known to be revoked.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.Timeout)
		l, err := is.Issue(rctx, e.item)
		cancel()
		if err == nil {
			cur := &issued{id: l.ID, ttl: l.TTL, renewable: l.Renewable, expires: time.Now().Add(l.TTL)}
			if !m.install(e, cur, l.Value) {
				l.Value.Zero()
				if ctx.Err() != nil && m.releaseReason(e) != "" {
					m.revoke(e, is, cur, m.releaseReason(e))
				} else if ctx.Err() != nil {
					m.revokeNow(is, cur) // closing: a lease nobody got is not left behind
				}
				return nil, false
			}
			m.remember(e, cur)
			d := m.detailsOf(e, "lease_id", cur.id, "version", strconv.FormatUint(cur.version, 10), "ttl", l.TTL.String())
			if prev != nil {
				d["replaces"] = prev.id
			}
			m.record(audit.Event{Actor: "keystore:" + e.upstream, Action: "lease.issue", Object: "container:" + e.holder.ContainerID, Result: audit.ResultOK, Details: d})
			m.log.Info("lease issued", "lease_id", cur.id, "container", e.holder.Container, "id", e.holder.ContainerID, "agent", e.holder.Agent, "ttl", l.TTL)
			if f := m.notify.Load(); f != nil {
				(*f)(e.holder.ContainerID)
			}
			return cur, true
		}
		if ctx.Err() != nil {
			return nil, false
		}
		m.mu.Lock()
		m.upErr[e.upstream] = err.Error()
		m.mu.Unlock()
		m.log.Warn("issuing a lease failed; retrying", "upstream", e.upstream, "item", e.item, "container", e.holder.Container, "err", err, "retry_in", wait)
		if !failing {
			failing = true // audited once per episode, not per retry
			m.record(audit.Event{Actor: "keystore:" + e.upstream, Action: "lease.issue", Object: "container:" + e.holder.ContainerID, Result: audit.ResultError,
				Details: m.detailsOf(e, "error", err.Error())})
		}
		if !sleep(ctx, jitter(wait)) {
			return nil, false
		}
		wait = min(2*wait, m.cfg.RetryMax)
	}
}

// install makes cur e's lease, replacing (and zeroing) the previous
// value. It reports false when e was released or the manager closed.
func (m *Manager) install(e *entry, cur *issued, v secret.Value) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.released != "" || m.ctx.Err() != nil {
		return false
	}
	zeroLocked(e)
	cur.version = versions.Add(1)
	delete(m.upErr, e.upstream)
	m.replacedLocked(e, cur.id)
	e.id, e.version, e.value, e.expires = cur.id, cur.version, v, cur.expires
	return true
}

// keep renews cur at half its remaining TTL until e is released (false)
// or cur cannot be kept (true: replace it). A renewal that comes back
// shorter than half the lease's TTL means its max TTL is near.
func (m *Manager) keep(ctx context.Context, e *entry, is keystore.Issuer, cur *issued) bool {
	if cur.ttl <= 0 {
		<-ctx.Done() // a lease without TTL lives until revoked
		return false
	}
	failing := false
	wait := m.cfg.RetryMin
	next := time.Until(cur.expires) / 2
	for {
		if !sleep(ctx, next) {
			return false
		}
		if !cur.renewable {
			return true
		}
		rctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
		ttl, err := is.Renew(rctx, cur.id, cur.ttl)
		cancel()
		if ctx.Err() != nil {
			return false
		}
		switch {
		case err == nil:
			failing, wait = false, m.cfg.RetryMin
			cur.expires = time.Now().Add(ttl)
			m.remember(e, cur)
			if ttl < cur.ttl/2 {
				m.log.Info("lease near its max TTL; issuing a new one", "lease_id", cur.id, "container", e.holder.Container)
				return true
			}
			next = ttl / 2
			continue
		case errors.Is(err, keystore.ErrNotFound) || errors.Is(err, keystore.ErrInvalidRef):
			m.record(audit.Event{Actor: "keystore:" + e.upstream, Action: "lease.renew", Object: "container:" + e.holder.ContainerID, Result: audit.ResultError,
				Details: m.detailsOf(e, "lease_id", cur.id, "error", err.Error(), "outcome", "a new lease is issued")})
			return true
		}
		left := time.Until(cur.expires)
		m.log.Warn("renewing a lease failed; retrying", "lease_id", cur.id, "container", e.holder.Container, "err", err, "expires_in", left)
		if !failing {
			failing = true
			m.record(audit.Event{Actor: "keystore:" + e.upstream, Action: "lease.renew", Object: "container:" + e.holder.ContainerID, Result: audit.ResultError,
				Details: m.detailsOf(e, "lease_id", cur.id, "error", err.Error(), "expires_in", left.Round(time.Second).String())})
		}
		if left <= 0 {
			return true // expired: the container needs a new one
		}
		next = min(jitter(wait), left)
		wait = min(2*wait, m.cfg.RetryMax)
	}
}

// revoke revokes l at the upstream, retrying with backoff until it
// answers or l has expired anyway, and audits the outcome. It does not
// stop when the manager closes: a released lease is never left behind
// knowingly (Close waits for it, up to its ctx).
func (m *Manager) revoke(e *entry, is keystore.Issuer, l *issued, reason string) {
	wait := m.cfg.RetryMin
	var err error
	attempts := 0
	for {
		attempts++
		rctx, cancel := context.WithTimeout(context.Background(), m.cfg.Timeout)
		err = is.Revoke(rctx, l.id)
		cancel()
		if err == nil || !time.Now().Before(l.expires) || m.ctx.Err() != nil && attempts >= 3 {
			break
		}
		m.log.Warn("revoking a lease failed; retrying", "lease_id", l.id, "container", e.holder.Container, "err", err, "retry_in", wait)
		time.Sleep(jitter(wait))
		wait = min(2*wait, m.cfg.RetryMax)
	}
	d := m.detailsOf(e, "lease_id", l.id, "reason", reason)
	if l.version != 0 {
		d["version"] = strconv.FormatUint(l.version, 10)
	}
	result := audit.ResultOK
	if attempts > 1 {
		d["attempts"] = strconv.Itoa(attempts)
	}
	if err != nil {
		result = audit.ResultError
		d["error"] = err.Error()
		if !time.Now().Before(l.expires) {
			d["outcome"] = "expired at its TTL"
		}
		m.log.Error("revoking a lease failed", "lease_id", l.id, "container", e.holder.Container, "err", err)
	}
	if err == nil || !time.Now().Before(l.expires) {
		m.forget(l.id)
	}
	if err == nil {
		m.log.Info("lease revoked", "lease_id", l.id, "container", e.holder.Container, "id", e.holder.ContainerID, "reason", reason)
	}
	m.record(audit.Event{Actor: "keystore:" + e.upstream, Action: "lease.revoke", Object: "container:" + e.holder.ContainerID, Result: result, Details: d})
	m.mu.Lock()
	if e.id == l.id && e.released != "" {
		zeroLocked(e)
	}
	m.mu.Unlock()
}

// revokeNow revokes a lease once, unaudited (issued while closing).
func (m *Manager) revokeNow(is keystore.Issuer, l *issued) {
	rctx, cancel := context.WithTimeout(context.Background(), m.cfg.Timeout)
	defer cancel()
	_ = is.Revoke(rctx, l.id)
}

// detailsOf is details with m.mu taken (e.secrets changes under it).
func (m *Manager) detailsOf(e *entry, kv ...string) map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return details(e, kv...)
}

// details are the audit details of e: never a value. Callers hold m.mu.
func details(e *entry, kv ...string) map[string]string {
	d := map[string]string{
		"container_id": e.holder.ContainerID, "container": e.holder.Container, "image": e.holder.Image, "agent": e.holder.Agent,
		"upstream": e.upstream, "item": e.item,
	}
	names := slices.Sorted(maps.Keys(e.secrets))
	if len(names) > 0 {
		d["secret"] = names[0]
		if len(names) > 1 {
			d["secrets"] = fmt.Sprint(names)
		}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		d[kv[i]] = kv[i+1]
	}
	return d
}

func (m *Manager) record(e audit.Event) {
	if m.cfg.Audit == nil {
		return
	}
	if _, err := m.cfg.Audit.Append(context.Background(), e); err != nil {
		m.log.Error("audit append failed", "action", e.Action, "object", e.Object, "err", err)
	}
}

// sleep waits d or until ctx ends (false).
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// jitter returns a duration in [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}
