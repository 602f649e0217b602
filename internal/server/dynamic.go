package server

import (
	"context"
	"fmt"
	"log/slog"

	"coffer/internal/audit"
	"coffer/internal/catalog"
	"coffer/internal/keystore"
	"coffer/internal/lease"
	"coffer/internal/store"
)

// openLeases opens the configured upstreams that issue credentials (type
// vault-dynamic; no network I/O) and the lease manager that gives each
// container its own lease of the secrets linked to them. Nil without such
// upstreams. Lease ids (never credentials) are remembered in st, so that
// a restarted server revokes the leases of its previous run.
func openLeases(ctx context.Context, cfg Config, st store.Backend, cat *catalog.Catalog, trail *audit.Log, owner string, log *slog.Logger) (*lease.Manager, keystore.Issuers, error) {
	iss, err := cfg.Keystores.OpenIssuers(log)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	if len(iss) == 0 {
		return nil, nil, nil
	}
	for name := range iss {
		log.Info("keystore upstream configured (issues a lease per container)", "upstream", name)
	}
	lm := lease.New(lease.Config{Issuers: iss, Catalog: cat, Audit: trail, Logger: log, Store: st, Owner: owner})
	if err := lm.Load(ctx); err != nil {
		iss.Close()
		return nil, nil, err
	}
	return lm, iss, nil
}
