package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"coffer/internal/catalog"
	"coffer/internal/seal"
	"coffer/internal/seal/awskms"
	"coffer/internal/seal/azurekv"
	"coffer/internal/seal/transit"
	"coffer/internal/store"
	"coffer/internal/store/bolt"
)

// probeTimeout bounds the test wrap and unwrap with a KMS master key at start.
const probeTimeout = 30 * time.Second

// openSeal opens the configured master key and the previous ones into a
// Ring. A local primary key file is created only for a fresh data dir; a
// KMS key is tried once (wrap and unwrap a throw-away data key) so that a
// key that cannot be used is an error at start. With a KMS no key file is
// read or written. shared is the store when it is not the data dir's bolt
// file (etcd), nil otherwise.
func openSeal(ctx context.Context, cfg Config, fresh bool, shared store.Backend, log *slog.Logger) (*seal.Ring, error) {
	sc := cfg.Seal
	var opened []seal.KeyWrapper
	fail := func(err error) (*seal.Ring, error) {
		for _, w := range opened {
			if c, ok := w.(interface{ Close() }); ok {
				c.Close()
			}
		}
		return nil, err
	}
	keyFile := sc.MasterKeyFile
	if keyFile == "" {
		keyFile = cfg.MasterKeyFile
	}
	if keyFile == "" {
		keyFile = filepath.Join(cfg.DataDir, "master.key")
	}
	if sc.Type == SealLocal && !fresh {
		if _, err := os.Stat(keyFile); errors.Is(err, os.ErrNotExist) {
			// A store sealed with a KMS, started with the default seal?
			var canary string
			if shared != nil {
				_, canary, _ = catalog.SealStatus(ctx, shared)
			} else {
				canary = peekCanary(ctx, filepath.Join(cfg.DataDir, storeFile))
			}
			if canary != "" && !isLocalKeyID(canary) {
				return fail(fmt.Errorf("master key: the store in %s was sealed with master key %s, but the server is configured with a local master key file (%s, which does not exist): "+
					"configure the seal section (--seal %s) for that key; nothing was changed", storeWhere(cfg), canary, keyFile, strings.SplitN(canary, ":", 2)[0]))
			}
		}
	}
	primary, err := openWrapper(sc, keyFile, fresh, log)
	if err != nil {
		return fail(err)
	}
	opened = append(opened, primary)
	if sc.Type != SealLocal {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		err := seal.Probe(pctx, primary)
		cancel()
		if err != nil {
			return fail(fmt.Errorf("master key (seal type %s): %w", sc.Type, err))
		}
	}
	for i, p := range sc.Previous {
		w, err := openWrapper(p, p.MasterKeyFile, false, log)
		if err != nil {
			return fail(fmt.Errorf("seal.previous[%d]: %w", i, err))
		}
		opened = append(opened, w)
	}
	ring, err := seal.NewRing(primary, opened[1:]...)
	if err != nil {
		return fail(fmt.Errorf("seal: %w", err))
	}
	return ring, nil
}

func openWrapper(c SealConfig, keyFile string, create bool, log *slog.Logger) (seal.KeyWrapper, error) {
	switch c.Type {
	case SealLocal:
		return loadKey(keyFile, create, log)
	case SealVaultTransit:
		return transit.New(*c.Transit, log)
	case SealAWSKMS:
		return awskms.New(*c.AWS)
	case SealAzureKV:
		return azurekv.New(*c.Azure)
	}
	return nil, fmt.Errorf("seal: type %q is unknown", c.Type)
}

// checkStoreSeal refuses a store sealed under a master key the ring does not
// hold, before anything is written: the canary's key (the key the store was
// sealed with) and every value's.
func checkStoreSeal(ctx context.Context, st store.Backend, ring *seal.Ring, dataDir string, log *slog.Logger) error {
	counts, canary, err := catalog.SealStatus(ctx, st)
	if err != nil {
		return fmt.Errorf("master key: read the store: %w", err)
	}
	configured := describeKeyIDs(ring.KeyIDs())
	if _, ok := ring.ForKeyID(canary); canary != "" && !ok {
		return fmt.Errorf("master key: the store in %s was sealed with master key %s, but the server is configured with %s: "+
			"start it with the master key the store was sealed with, or move the store to the new key by configuring the old one "+
			"under seal.previous (or --seal-previous local:FILE) and running coffer-server rewrap (see docs/keystores.md); nothing was changed",
			dataDir, describeKeyID(canary), configured)
	}
	var missing []string
	for _, id := range catalog.SortedKeyIDs(counts) {
		if _, ok := ring.ForKeyID(id); !ok {
			missing = append(missing, fmt.Sprintf("%d under %s", counts[id], describeKeyID(id)))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("master key: values in the store are sealed under master keys the server is not configured with (%s; configured: %s): "+
			"an unfinished rewrap? Configure those keys under seal.previous until coffer-server rewrap has finished; nothing was changed",
			strings.Join(missing, ", "), configured)
	}
	for _, p := range ring.Previous() {
		if counts[p.KeyID()] == 0 {
			log.Info("no value is sealed under the previous master key any more: remove it from seal.previous", "key", describeKeyID(p.KeyID()))
		} else {
			log.Info("values still sealed under a previous master key: run coffer-server rewrap", "key", describeKeyID(p.KeyID()), "values", counts[p.KeyID()])
		}
	}
	return nil
}

func describeKeyIDs(ids []string) string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = describeKeyID(id)
	}
	if len(out) == 1 {
		return out[0]
	}
	return out[0] + " (previous: " + strings.Join(out[1:], ", ") + ")"
}

func loadKey(path string, fresh bool, log *slog.Logger) (*seal.LocalKey, error) {
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		k, err := seal.LoadKeyFile(path)
		if err != nil {
			return nil, fmt.Errorf("master key: %w", err)
		}
		return k, nil
	}
	if !fresh {
		return nil, fmt.Errorf("master key %s is missing but the data dir holds a store sealed with one: restore the key file (or point --master-key-file at it); refusing to create a new key", path)
	}
	k, err := seal.CreateKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	log.Info("created master key", "path", path)
	return k, nil
}

// Rewrap moves the store to the ring's primary master key (see
// catalog.Rewrap): every value sealed under a previous key, and, with
// inPlace, those under the primary to its newest key version.
func Rewrap(ctx context.Context, st store.Backend, ring *seal.Ring, inPlace bool, log *slog.Logger) (catalog.RewrapStats, error) {
	return catalog.Rewrap(ctx, catalog.RewrapConfig{
		Store: st, To: ring.Primary(), From: ring.Previous(), InPlace: inPlace, Logger: log,
	})
}

// startRewrap runs the rewrap in the background while the server serves,
// when previous master keys are configured; it retries with backoff while a
// KMS cannot be reached. stop cancels it and waits for it to end.
func (s *Server) startRewrap() (stop func()) {
	if len(s.ring.Previous()) == 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		backoff := 2 * time.Second
		for {
			st, err := Rewrap(ctx, s.st, s.ring, false, s.log)
			if err == nil {
				s.log.Info("rewrap complete: every value is sealed under the master key; remove seal.previous (or --seal-previous) from the configuration",
					"key", describeKeyID(s.ring.KeyID()), "moved", st.Moved)
				return
			}
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("rewrap failed; retrying", "err", err, "retry_in", backoff.String())
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Minute)
		}
	}()
	return func() { cancel(); <-done }
}

// RewrapStore is coffer-server rewrap: it opens the data dir's store (which
// no running server may hold) with cfg's master keys and moves it to the
// primary one. It returns the envelopes counted per master key id after the
// move.
func RewrapStore(ctx context.Context, cfg Config, inPlace bool, log *slog.Logger) (catalog.RewrapStats, map[string]int, error) {
	if err := cfg.Validate(); err != nil {
		return catalog.RewrapStats{}, nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Seal.Previous) == 0 && !inPlace {
		return catalog.RewrapStats{}, nil, errors.New("rewrap: no previous master key to move the store from: give --from-config OLD.yaml, --seal-previous local:FILE or seal.previous, or --in-place")
	}
	storePath := filepath.Join(cfg.DataDir, storeFile)
	if _, err := os.Stat(storePath); err != nil {
		return catalog.RewrapStats{}, nil, fmt.Errorf("rewrap: no store in %s: %w", cfg.DataDir, err)
	}
	ring, err := openSeal(ctx, cfg, false, nil, log)
	if err != nil {
		return catalog.RewrapStats{}, nil, err
	}
	defer ring.Close()
	st, err := bolt.Open(storePath)
	if err != nil {
		return catalog.RewrapStats{}, nil, fmt.Errorf("rewrap: %w (a running coffer-server configured with seal.previous rewraps the store itself while it serves; to rewrap offline, stop it first)", err)
	}
	defer st.Close()
	if err := checkStoreSeal(ctx, st, ring, cfg.DataDir, log); err != nil {
		return catalog.RewrapStats{}, nil, err
	}
	stats, err := Rewrap(ctx, st, ring, inPlace, log)
	if err != nil {
		return stats, nil, err
	}
	counts, _, err := catalog.SealStatus(ctx, st)
	return stats, counts, err
}

// peekCanary returns the key id of the store's canary, or "" if it cannot
// be read. It writes nothing.
func peekCanary(ctx context.Context, storePath string) string {
	st, err := bolt.Open(storePath)
	if err != nil {
		return ""
	}
	defer st.Close()
	_, canary, _ := catalog.SealStatus(ctx, st)
	return canary
}
