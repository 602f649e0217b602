package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"coffer/internal/seal"
	"coffer/internal/store"
)

// Rewrapping moves a store from one master key to another without touching
// any value: only each envelope's wrapped data key changes (unwrapped with
// the old key, wrapped with the new one, or rewrapped inside the KMS), so
// the value's ciphertext and its associated data stay as they are.
//
// Every store value that is a whole seal.Envelope is rewrapped: secret
// versions, the catalog's canary, the audit trail's MAC key, and any sealed
// record added later. The canary is rewrapped last, once a full pass found no
// other envelope under an old key: a canary under the new key means the
// whole store is.

// RewrapConfig configures Rewrap.
type RewrapConfig struct {
	Store store.Backend
	// To is the master key every envelope ends under.
	To seal.KeyWrapper
	// From are the master keys whose envelopes are moved to To.
	From []seal.KeyWrapper
	// InPlace also rewraps envelopes already under To to To's newest key
	// version (after a Vault Transit key rotation); To must be a
	// seal.Rewrapper.
	InPlace bool
	// Batch is the number of envelopes per transaction; default 32.
	Batch  int
	Logger *slog.Logger
}

// RewrapStats counts what Rewrap did.
type RewrapStats struct {
	Moved     int // envelopes moved from a From key to To
	InPlace   int // envelopes rewrapped to To's newest key version
	Unchanged int // in-place rewraps that found the newest version already
	Raced     int // envelopes changed or deleted meanwhile (looked at again)
}

// maxPasses bounds the passes over the store: each pass rewraps what it
// found; a concurrent writer sealing with the new key adds nothing to do.
const maxPasses = 8

// ErrRewrap is returned (wrapped) when a store cannot be moved to its new
// master key.
var ErrRewrap = errors.New("rewrap")

// Rewrap moves every envelope sealed under a From key to To, in small
// transactions, while the store stays in use: an envelope changed meanwhile
// is left as the writer made it and looked at again. It is idempotent and
// resumable: stopped at any point, every envelope opens under From or To,
// and running it again finishes the job. Data keys are zeroed after use
// and appear in no error or log.
func Rewrap(ctx context.Context, cfg RewrapConfig) (RewrapStats, error) {
	var st RewrapStats
	if cfg.Batch <= 0 {
		cfg.Batch = 32
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	from := map[string]seal.KeyWrapper{}
	for _, w := range cfg.From {
		if w.KeyID() == cfg.To.KeyID() {
			return st, fmt.Errorf("%w: master key %s is both the old and the new key", ErrRewrap, w.KeyID())
		}
		from[w.KeyID()] = w
	}
	var rw seal.Rewrapper
	if cfg.InPlace {
		var ok bool
		if rw, ok = cfg.To.(seal.Rewrapper); !ok {
			return st, fmt.Errorf("%w: master key %s cannot rewrap in place (only Vault Transit can)", ErrRewrap, cfg.To.KeyID())
		}
	}
	r := rewrapper{cfg: cfg, from: from, rw: rw, stats: &st}
	inPlace := cfg.InPlace
	for pass := 0; ; pass++ {
		keys, err := r.todo(ctx, inPlace, false)
		if err != nil {
			return st, err
		}
		if len(keys) == 0 {
			break
		}
		if pass == maxPasses {
			return st, fmt.Errorf("%w: %d values are still sealed under an old master key after %d passes: is another server still sealing new values with the old key?",
				ErrRewrap, len(keys), maxPasses)
		}
		cfg.Logger.Info("rewrap: pass", "pass", pass+1, "envelopes", len(keys), "to", cfg.To.KeyID())
		for len(keys) > 0 {
			n := min(cfg.Batch, len(keys))
			if err := r.batch(ctx, keys[:n]); err != nil {
				return st, err
			}
			keys = keys[n:]
		}
		inPlace = false // new envelopes are made under the newest version
	}
	// Last, the canary.
	keys, err := r.todo(ctx, cfg.InPlace, true)
	if err != nil {
		return st, err
	}
	if len(keys) > 0 {
		if err := r.batch(ctx, keys); err != nil {
			return st, err
		}
		if keys, err = r.todo(ctx, false, true); err != nil {
			return st, err
		} else if len(keys) > 0 {
			return st, fmt.Errorf("%w: the canary changed while being rewrapped; run again", ErrRewrap)
		}
	}
	cfg.Logger.Info("rewrap: done", "to", cfg.To.KeyID(), "moved", st.Moved, "in_place", st.InPlace)
	return st, nil
}

type rewrapper struct {
	cfg   RewrapConfig
	from  map[string]seal.KeyWrapper
	rw    seal.Rewrapper
	stats *RewrapStats
}

// todo lists the keys of envelopes to rewrap: the canary only, or all others.
func (r *rewrapper) todo(ctx context.Context, inPlace, canary bool) ([]string, error) {
	var keys []string
	err := r.cfg.Store.View(ctx, func(tx store.Tx) error {
		return tx.List("", func(k string, v []byte) error {
			if (k == canaryKey) != canary {
				return nil
			}
			env, ok := decodeEnvelope(v)
			if !ok {
				return nil
			}
			if _, old := r.from[env.KeyID]; old || (inPlace && env.KeyID == r.cfg.To.KeyID()) {
				keys = append(keys, k)
			}
			return nil
		})
	})
	return keys, err
}

// batch rewraps the envelopes at keys: read in one transaction, rewrapped
// outside it (KMS calls), written in one transaction where unchanged.
func (r *rewrapper) batch(ctx context.Context, keys []string) error {
	old := make(map[string][]byte, len(keys))
	err := r.cfg.Store.View(ctx, func(tx store.Tx) error {
		for _, k := range keys {
			v, err := tx.Get(k)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			old[k] = bytes.Clone(v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	updated := make(map[string][]byte, len(old))
	for k, v := range old {
		nv, moved, err := r.one(ctx, k, v)
		if err != nil {
			return err
		}
		if nv != nil {
			updated[k] = nv
			if moved {
				r.stats.Moved++
			} else {
				r.stats.InPlace++
			}
		}
	}
	if len(updated) == 0 {
		return nil
	}
	return r.cfg.Store.Update(ctx, func(tx store.Tx) error {
		for k, nv := range updated {
			cur, err := tx.Get(k)
			if errors.Is(err, store.ErrNotFound) || (err == nil && !bytes.Equal(cur, old[k])) {
				r.stats.Raced++ // changed meanwhile: the writer's version stands
				continue
			}
			if err != nil {
				return err
			}
			if err := tx.Put(k, nv); err != nil {
				return err
			}
		}
		return nil
	})
}

// one returns the rewrapped envelope for the value at key k, or nil when it
// needs nothing; moved says whether it changed master key.
func (r *rewrapper) one(ctx context.Context, k string, v []byte) ([]byte, bool, error) {
	env, ok := decodeEnvelope(v)
	if !ok {
		return nil, false, nil
	}
	k = strings.ReplaceAll(k, "\x00", " version ") // sv/NAME\x00VERSION, for messages
	var wdek []byte
	moved := false
	if w, old := r.from[env.KeyID]; old {
		dek, err := w.Unwrap(ctx, env.WrappedDEK)
		if err == nil && len(dek) != seal.DEKSize {
			err = fmt.Errorf("%w: data key is %d bytes", seal.ErrDecrypt, len(dek))
		}
		if err != nil {
			clear(dek)
			return nil, false, fmt.Errorf("%w: %s: unwrap with the old master key %s: %w", ErrRewrap, k, env.KeyID, err)
		}
		wdek, err = r.cfg.To.Wrap(ctx, dek)
		clear(dek)
		if err != nil {
			return nil, false, fmt.Errorf("%w: %s: wrap with the new master key %s: %w", ErrRewrap, k, r.cfg.To.KeyID(), err)
		}
		moved = true
	} else if r.rw != nil && env.KeyID == r.cfg.To.KeyID() {
		var err error
		wdek, err = r.rw.Rewrap(ctx, env.WrappedDEK)
		if err != nil {
			return nil, false, fmt.Errorf("%w: %s: rewrap in place with %s: %w", ErrRewrap, k, env.KeyID, err)
		}
		if ver := r.rw.KeyVersion(wdek); ver != "" && ver == r.rw.KeyVersion(env.WrappedDEK) {
			r.stats.Unchanged++
			return nil, false, nil
		}
	} else {
		return nil, false, nil
	}
	env.KeyID, env.WrappedDEK = r.cfg.To.KeyID(), wdek
	b, err := json.Marshal(env)
	if err != nil {
		return nil, false, err
	}
	return b, moved, nil
}

// envelopePrefix starts every marshalled seal.Envelope (its first field).
var envelopePrefix = []byte(`{"kid":`)

// decodeEnvelope reports whether v is exactly a marshalled seal.Envelope.
func decodeEnvelope(v []byte) (seal.Envelope, bool) {
	var env seal.Envelope
	if !bytes.HasPrefix(v, envelopePrefix) {
		return env, false
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil || dec.More() {
		return env, false
	}
	if env.KeyID == "" || len(env.WrappedDEK) == 0 || len(env.Nonce) == 0 || len(env.Ciphertext) == 0 {
		return env, false
	}
	return env, true
}

// SealStatus reports how the store is sealed: the number of envelopes under
// each master key id, and the canary's key id ("" for a store without one,
// i.e. one never opened by a catalog).
func SealStatus(ctx context.Context, st store.Backend) (counts map[string]int, canary string, err error) {
	counts = map[string]int{}
	err = st.View(ctx, func(tx store.Tx) error {
		return tx.List("", func(k string, v []byte) error {
			if env, ok := decodeEnvelope(v); ok {
				counts[env.KeyID]++
				if k == canaryKey {
					canary = env.KeyID
				}
			}
			return nil
		})
	})
	return counts, canary, err
}

// SortedKeyIDs returns the key ids of a SealStatus count, sorted.
func SortedKeyIDs(counts map[string]int) []string {
	ids := make([]string, 0, len(counts))
	for id := range counts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}
