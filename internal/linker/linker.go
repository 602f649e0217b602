// Package linker keeps Coffer's linked secrets in step with the upstream
// keystores they come from (package keystore).
//
// One Poller per configured upstream checks the items that live secrets
// are linked to, as cheaply as the upstream allows. On a new upstream
// version the item is read once, however many secrets and containers use
// it (fan-in: secrets linked to different keys of one item share the
// read), and each secret gets a new Coffer version (catalog.SyncLinked),
// which the broker pushes to every bound container like any rotation. An
// item the upstream deleted, disabled or no longer lets Coffer read is
// revoked from every container (catalog.RevokeLinked) and audited with
// the reason; an upstream that is merely unreachable changes nothing in
// containers and is reported degraded (Status, /readyz, metrics).
package linker

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"coffer/internal/audit"
	"coffer/internal/catalog"
	"coffer/internal/keystore"
	"coffer/internal/secret"
)

// Catalog is what the linker needs of the catalog.
type Catalog interface {
	Linked(ctx context.Context) ([]catalog.SecretMeta, error)
	SyncLinked(ctx context.Context, name, from string, v catalog.LinkedVersion, author string) (catalog.LinkResult, error)
	RevokeLinked(ctx context.Context, name, from, reason string) (bool, error)
}

// Auditor records what the linker changed.
type Auditor interface {
	Append(ctx context.Context, e audit.Event) (audit.Event, error)
}

// Config configures a Linker.
type Config struct {
	Keystores keystore.Set
	// Intervals is each upstream's poll interval; a missing one is
	// DefaultInterval.
	Intervals map[string]time.Duration
	Catalog   Catalog
	Audit     Auditor
	Logger    *slog.Logger
	// ReadTimeout bounds one upstream read (default 30 s; the upstream's
	// own per-request timeout applies too).
	ReadTimeout time.Duration
}

// DefaultInterval is the poll interval of an upstream without one.
const DefaultInterval = 10 * time.Second

// Linker is safe for concurrent use.
type Linker struct {
	cfg    Config
	log    *slog.Logger
	reload chan struct{}

	mu       sync.Mutex
	links    map[string]link // by secret name: the live linked secrets
	items    map[string]map[string]bool
	upstream map[string]*health           // by upstream name
	itemErr  map[string]map[string]string // upstream → item → why it is degraded
}

type link struct {
	catalog.Link
	version string // upstream version of the secret's current Coffer version
}

type health struct {
	checked time.Time
	err     string // last whole-Check error; "" when it answered
}

// New makes a Linker; Run starts it.
func New(cfg Config) *Linker {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 30 * time.Second
	}
	l := &Linker{
		cfg: cfg, log: cfg.Logger, reload: make(chan struct{}, 1),
		links: map[string]link{}, items: map[string]map[string]bool{},
		upstream: map[string]*health{}, itemErr: map[string]map[string]string{},
	}
	for name := range cfg.Keystores {
		l.upstream[name] = &health{}
		l.itemErr[name] = map[string]string{}
		upstreamUp.WithLabelValues(name).Set(1)
	}
	return l
}

// Changed is the catalog's OnChange hook: a secret change may be a link
// created, changed, deleted or restored, so the set of linked items is
// reloaded (asynchronously, coalesced).
func (l *Linker) Changed(ch catalog.Change) {
	if ch.Kind != catalog.SecretPut && ch.Kind != catalog.SecretDeleted {
		return
	}
	select {
	case l.reload <- struct{}{}:
	default:
	}
}

// Run loads the linked secrets and polls every upstream until ctx ends.
func (l *Linker) Run(ctx context.Context) error {
	if err := l.load(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for name, ks := range l.cfg.Keystores {
		interval := l.cfg.Intervals[name]
		if interval <= 0 {
			interval = DefaultInterval
		}
		p := &keystore.Poller{
			Keystore: ks, Interval: interval, Logger: l.log.With("upstream", name),
			Items:    func() []string { return l.itemsOf(name) },
			OnChange: func(item string, st keystore.State) { l.changed(ctx, name, item, st) },
			OnCheck:  func(err error) { l.checked(name, err) },
			Stale:    func(item string, st keystore.State) bool { return l.stale(name, item, st) },
		}
		wg.Go(func() { p.Run(ctx) })
	}
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-l.reload:
			if err := l.load(ctx); err != nil && ctx.Err() == nil {
				l.log.Error("reloading linked secrets", "err", err)
			}
		}
	}
}

// load reads the live linked secrets from the catalog.
func (l *Linker) load(ctx context.Context) error {
	metas, err := l.cfg.Catalog.Linked(ctx)
	if err != nil {
		return fmt.Errorf("linked secrets: %w", err)
	}
	links := make(map[string]link, len(metas))
	items := map[string]map[string]bool{}
	for _, m := range metas {
		if m.Link.Dynamic {
			continue // a lease per container (package lease): nothing to poll
		}
		lk := link{Link: *m.Link}
		if len(m.Versions) > 0 && m.Link.Revoked == "" {
			lk.version = m.Versions[0].Upstream
		}
		links[m.Name] = lk
		if items[lk.Upstream] == nil {
			items[lk.Upstream] = map[string]bool{}
		}
		items[lk.Upstream][lk.Item] = true
	}
	l.mu.Lock()
	l.links, l.items = links, items
	for up, errs := range l.itemErr {
		for it := range errs {
			if !items[up][it] {
				delete(errs, it)
			}
		}
	}
	l.mu.Unlock()
	return nil
}

func (l *Linker) itemsOf(upstream string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Sorted(maps.Keys(l.items[upstream]))
}

// linksTo returns the secrets linked to item of upstream, by name.
func (l *Linker) linksTo(upstream, item string) map[string]link {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]link{}
	for name, lk := range l.links {
		if lk.Upstream == upstream && lk.Item == item {
			out[name] = lk
		}
	}
	return out
}

// stale reports whether a secret linked to item is not where st says the
// item is (a sync or revocation that failed): the Poller then reports the
// item again.
func (l *Linker) stale(upstream, item string, st keystore.State) bool {
	for _, lk := range l.linksTo(upstream, item) {
		switch {
		case st.Err == nil && lk.version != st.Version:
			return true
		case keystore.Gone(st.Err) && lk.version != "":
			return true
		}
	}
	return false
}

func (l *Linker) checked(upstream string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.upstream[upstream]
	h.checked = time.Now().UTC()
	h.err = ""
	checks.WithLabelValues(upstream, resultOf(err)).Inc()
	if err != nil {
		h.err = err.Error()
		upstreamUp.WithLabelValues(upstream).Set(0)
		return
	}
	upstreamUp.WithLabelValues(upstream).Set(1)
}

// changed handles a new state of one item, as the Poller reports it.
func (l *Linker) changed(ctx context.Context, upstream, item string, st keystore.State) {
	secrets := l.linksTo(upstream, item)
	if len(secrets) == 0 {
		return
	}
	switch {
	case st.Err == nil:
		l.setItemErr(upstream, item, nil)
		var stale []string
		for name, lk := range secrets {
			if lk.version != st.Version {
				stale = append(stale, name)
			}
		}
		if len(stale) > 0 {
			slices.Sort(stale)
			l.sync(ctx, upstream, item, secrets, stale)
		}
	case keystore.Gone(st.Err):
		l.setItemErr(upstream, item, nil)
		for _, name := range slices.Sorted(maps.Keys(secrets)) {
			l.revoke(ctx, upstream, name, secrets[name], st.Err)
		}
	default:
		l.setItemErr(upstream, item, st.Err)
	}
}

// sync reads item once and stores its new version in every stale secret.
func (l *Linker) sync(ctx context.Context, upstream, item string, secrets map[string]link, stale []string) {
	rctx, cancel := context.WithTimeout(ctx, l.cfg.ReadTimeout)
	it, err := l.cfg.Keystores[upstream].Read(rctx, item)
	cancel()
	reads.WithLabelValues(upstream).Inc()
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		if keystore.Gone(err) {
			for _, name := range stale {
				l.revoke(ctx, upstream, name, secrets[name], err)
			}
			return
		}
		l.setItemErr(upstream, item, err)
		return
	}
	defer it.Value.Zero()
	for _, name := range stale {
		lk := secrets[name]
		v, err := pick(it.Value, lk.Key)
		if err != nil {
			l.revoke(ctx, upstream, name, lk, &keystore.Error{Upstream: upstream, Item: item, Err: err})
			continue
		}
		r, err := l.cfg.Catalog.SyncLinked(ctx, name, lk.From, catalog.LinkedVersion{Upstream: it.Version, Value: v}, "keystore:"+upstream)
		if lk.Key != "" {
			v.Zero()
		}
		if err != nil {
			// Too large for the catalog, or the store failed: the last
			// value stays; say so where operators look.
			l.log.Error("storing a linked secret's new upstream version", "secret", name, "from", lk.From, "err", err)
			l.setItemErr(upstream, item, err)
			continue
		}
		l.mu.Lock()
		if cur, ok := l.links[name]; ok && cur.From == lk.From {
			cur.version = it.Version
			l.links[name] = cur
		}
		l.mu.Unlock()
		if !r.Changed {
			continue
		}
		syncs.WithLabelValues(upstream).Inc()
		l.record(ctx, audit.Event{Actor: "keystore:" + upstream, Action: "secret.sync", Object: "secret:" + name, Result: "ok",
			Details: map[string]string{"from": lk.From, "version": fmt.Sprint(r.Current), "upstream_version": it.Version}})
	}
}

func pick(item secret.Value, key string) (secret.Value, error) {
	if key == "" {
		return item, nil
	}
	return keystore.Pick(item, key)
}

// revoke removes secret name from every container because its upstream
// item is gone (cause says how), and audits it.
func (l *Linker) revoke(ctx context.Context, upstream, name string, lk link, cause error) {
	reason := cause.Error()
	changed, err := l.cfg.Catalog.RevokeLinked(ctx, name, lk.From, reason)
	if err != nil {
		l.log.Error("revoking a linked secret", "secret", name, "from", lk.From, "err", err)
		return
	}
	l.mu.Lock()
	if cur, ok := l.links[name]; ok && cur.From == lk.From {
		cur.version = ""
		l.links[name] = cur
	}
	l.mu.Unlock()
	if !changed {
		return
	}
	revocations.WithLabelValues(upstream).Inc()
	l.record(ctx, audit.Event{Actor: "keystore:" + upstream, Action: "secret.revoke", Object: "secret:" + name, Result: "ok",
		Details: map[string]string{"from": lk.From, "reason": reason}})
}

func (l *Linker) record(ctx context.Context, e audit.Event) {
	if l.cfg.Audit == nil {
		return
	}
	if _, err := l.cfg.Audit.Append(context.WithoutCancel(ctx), e); err != nil {
		l.log.Error("audit append failed", "action", e.Action, "object", e.Object, "err", err)
	}
}

func (l *Linker) setItemErr(upstream, item string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	errs := l.itemErr[upstream]
	if errs == nil {
		return
	}
	if err == nil {
		delete(errs, item)
	} else {
		errs[item] = err.Error()
	}
	degradedItems.WithLabelValues(upstream).Set(float64(len(errs)))
}

// Resolve parses a reference (UPSTREAM:ITEM[#KEY]) against the configured
// upstreams and reads its current value: what linking a secret needs. The
// caller zeroes the value. Errors name the upstream and the item, never a
// value, and wrap keystore's sentinels.
func (l *Linker) Resolve(ctx context.Context, from string) (catalog.Link, catalog.LinkedVersion, error) {
	ref, err := l.cfg.Keystores.ParseRef(from)
	if err != nil {
		return catalog.Link{}, catalog.LinkedVersion{}, err
	}
	rctx, cancel := context.WithTimeout(ctx, l.cfg.ReadTimeout)
	defer cancel()
	it, err := l.cfg.Keystores[ref.Upstream].Read(rctx, ref.Item)
	reads.WithLabelValues(ref.Upstream).Inc()
	if err != nil {
		return catalog.Link{}, catalog.LinkedVersion{}, err
	}
	v := it.Value
	if ref.Key != "" {
		v, err = keystore.Pick(it.Value, ref.Key)
		it.Value.Zero()
		if err != nil {
			return catalog.Link{}, catalog.LinkedVersion{}, &keystore.Error{Upstream: ref.Upstream, Item: ref.Item, Err: err}
		}
	}
	lk := catalog.Link{From: ref.String(), Upstream: ref.Upstream, Item: ref.Item, Key: ref.Key}
	return lk, catalog.LinkedVersion{Upstream: it.Version, Value: v}, nil
}

// UpstreamStatus is one upstream's health.
type UpstreamStatus struct {
	Name     string    `json:"name"`
	State    string    `json:"state"` // "ok", or "degraded" (unreachable, throttling, failing items)
	Checked  time.Time `json:"checked,omitzero"`
	Error    string    `json:"error,omitempty"`
	Degraded int       `json:"degraded_items,omitempty"`
	Linked   int       `json:"linked_items"`
}

// Status reports every upstream's health, by name.
func (l *Linker) Status() []UpstreamStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []UpstreamStatus{}
	for _, name := range slices.Sorted(maps.Keys(l.upstream)) {
		h := l.upstream[name]
		s := UpstreamStatus{Name: name, State: "ok", Checked: h.checked, Error: h.err, Degraded: len(l.itemErr[name]), Linked: len(l.items[name])}
		if s.Error != "" || s.Degraded > 0 {
			s.State = "degraded"
		}
		out = append(out, s)
	}
	return out
}

// Degraded lists, one line each, the upstreams that are degraded now.
func (l *Linker) Degraded() []string {
	var out []string
	for _, s := range l.Status() {
		if s.State != "degraded" {
			continue
		}
		why := s.Error
		if why == "" {
			why = fmt.Sprintf("%d linked items cannot be checked or read", s.Degraded)
		}
		out = append(out, "upstream "+s.Name+" degraded: "+why)
	}
	return out
}

// LinkStatus is where one linked secret stands with its upstream.
type LinkStatus struct {
	State   string    `json:"state"` // "ok", "degraded" (last value kept), "revoked"
	Checked time.Time `json:"checked,omitzero"`
	Error   string    `json:"error,omitempty"`
}

// LinkState reports the state of the link l of a secret.
func (l *Linker) LinkState(lk catalog.Link) LinkStatus {
	if lk.Revoked != "" {
		return LinkStatus{State: "revoked", Error: lk.Revoked}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s := LinkStatus{State: "ok"}
	h := l.upstream[lk.Upstream]
	if h == nil {
		return LinkStatus{State: "degraded", Error: "upstream " + lk.Upstream + " is not configured on this server: containers keep the last value, changes are not followed"}
	}
	s.Checked = h.checked
	if h.err != "" {
		s.State, s.Error = "degraded", h.err
	}
	if e, ok := l.itemErr[lk.Upstream][lk.Item]; ok {
		s.State, s.Error = "degraded", e
	}
	return s
}

func resultOf(err error) string {
	if err == nil {
		return "ok"
	}
	return keystore.Kind(err).Error()
}
