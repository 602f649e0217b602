package server

import (
	"context"
	"log/slog"
	"sync"

	"coffer/internal/authn"
	"coffer/internal/broker"
	"coffer/internal/catalog"
	"coffer/internal/fleet"
	"coffer/internal/store"
)

// feed keeps a server on a shared store in step with what every server
// commits: one watch per kind of record the server caches or delivers.
// On etcd it is the broker's only source of changes, this server's own
// included, so that the broker sees all of them in commit order.
type feed struct {
	w      store.Watcher
	cat    *catalog.Catalog
	tokens *authn.Tokens
	fleet  *fleet.Fleet
	broker *broker.Broker
	// changed is told of every secret and binding change, as the
	// catalog's OnChange hook is on bolt (the broker's Changed, and
	// whatever else listens).
	changed func(catalog.Change)
	log     *slog.Logger
}

// run watches until ctx ends.
func (f *feed) run(ctx context.Context) {
	var wg sync.WaitGroup
	for prefix, fn := range map[string]func(context.Context, []store.Change, bool){
		catalog.SecretPrefix:  f.secrets,
		catalog.BindingPrefix: f.bindings,
		authn.Prefix:          f.tokenChanges,
		fleet.Prefix:          f.agents,
	} {
		wg.Go(func() {
			_ = f.w.Watch(ctx, prefix, func(cs []store.Change, reset bool) { fn(ctx, cs, reset) })
		})
	}
	wg.Wait()
}

func (f *feed) secrets(_ context.Context, cs []store.Change, reset bool) {
	if reset {
		f.broker.Resync()
		return
	}
	for _, c := range cs {
		ch, ok, err := catalog.SecretChange(c.Key, c.Value, c.Deleted)
		if err != nil {
			f.log.Error("watch: secret change", "key", c.Key, "err", err)
			continue
		}
		if ok {
			f.changed(ch)
		}
	}
}

func (f *feed) bindings(ctx context.Context, cs []store.Change, reset bool) {
	if reset {
		if err := f.cat.ReloadBindings(ctx); err != nil {
			f.log.Error("watch: reload bindings", "err", err)
		}
		f.broker.Resync()
		return
	}
	// The broker regrants every container on any binding change, from the
	// whole set: once for all the changes given at once (one commit, coffer
	// apply writes many, or what came in while the last regrant ran) is
	// enough.
	var last *catalog.Change
	for _, c := range cs {
		ch, ok, err := f.cat.BindingChange(c.Key, c.Value, c.Deleted)
		if err != nil {
			f.log.Error("watch: binding change", "key", c.Key, "err", err)
			continue
		}
		if ok {
			last = &ch
		}
	}
	if last != nil {
		f.changed(*last)
	}
}

func (f *feed) tokenChanges(ctx context.Context, cs []store.Change, reset bool) {
	if reset {
		if err := f.tokens.Reload(ctx); err != nil {
			f.log.Error("watch: reload tokens", "err", err)
		}
		return
	}
	for _, c := range cs {
		if err := f.tokens.Apply(c.Key, c.Value, c.Deleted); err != nil {
			f.log.Error("watch: token change", "key", c.Key, "err", err)
		}
	}
}

func (f *feed) agents(ctx context.Context, cs []store.Change, reset bool) {
	if reset {
		removed, err := f.fleet.Reload(ctx)
		if err != nil {
			f.log.Error("watch: reload agents", "err", err)
		}
		for _, name := range removed {
			f.broker.Disconnect(name)
		}
		return
	}
	for _, c := range cs {
		removed, err := f.fleet.Apply(c.Key, c.Value, c.Deleted)
		if err != nil {
			f.log.Error("watch: agent change", "key", c.Key, "err", err)
			continue
		}
		if removed {
			f.log.Info("agent removed on another server: closing its stream", "agent", c.Key[len(fleet.Prefix):])
			f.broker.Disconnect(c.Key[len(fleet.Prefix):])
		}
	}
}
