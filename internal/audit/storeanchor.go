package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"coffer/internal/seal"
	"coffer/internal/store"
)

// Store keys of a StoreAnchor.
const (
	anchorKeyKey  = "audit/key"  // seal.Envelope of the MAC key
	anchorHeadKey = "audit/head" // Mark as JSON
)

// keyAAD binds the sealed MAC key to its use.
var keyAAD = []byte("coffer/audit/key/v1")

// StoreAnchor is an Anchor in a store.Backend: the MAC key sealed under a
// master key (seal.Seal, its own data key, associated data
// "coffer/audit/key/v1") at "audit/key", and the Mark as JSON at
// "audit/head". Each Save is one store transaction.
//
// With Server set, the key and head are those of that server's own chain,
// at "audit/servers/<Server>/key" and "audit/servers/<Server>/head": on a
// store shared by several servers each keeps its own trail and anchors it
// under its own keys.
type StoreAnchor struct {
	Store  store.Backend
	Master seal.KeyWrapper
	Server string
}

// ServersPrefix is the store prefix of the per-server anchors.
const ServersPrefix = "audit/servers/"

// keys returns the store keys of the sealed MAC key and of the Mark.
func (a StoreAnchor) keys() (key, head string) {
	if a.Server == "" {
		return anchorKeyKey, anchorHeadKey
	}
	return ServersPrefix + a.Server + "/key", ServersPrefix + a.Server + "/head"
}

var _ Anchor = StoreAnchor{}

// Load implements Anchor. A store holding only one of the two keys, or a
// key that does not open under Master, is an error.
func (a StoreAnchor) Load(ctx context.Context) ([]byte, Mark, error) {
	var rawKey, rawHead []byte
	anchorKeyKey, anchorHeadKey := a.keys()
	err := a.Store.View(ctx, func(tx store.Tx) error {
		for k, dst := range map[string]*[]byte{anchorKeyKey: &rawKey, anchorHeadKey: &rawHead} {
			v, err := tx.Get(k)
			switch {
			case errors.Is(err, store.ErrNotFound):
			case err != nil:
				return err
			default:
				*dst = append([]byte(nil), v...)
			}
		}
		return nil
	})
	switch {
	case err != nil:
		return nil, Mark{}, err
	case rawKey == nil && rawHead == nil:
		return nil, Mark{}, ErrNotAnchored
	case rawKey == nil:
		return nil, Mark{}, fmt.Errorf("the store holds an audit head (%s) but no audit key (%s): %w", anchorHeadKey, anchorKeyKey, store.ErrCorrupt)
	case rawHead == nil:
		return nil, Mark{}, fmt.Errorf("the store holds an audit key (%s) but no audit head (%s): %w", anchorKeyKey, anchorHeadKey, store.ErrCorrupt)
	}
	var env seal.Envelope
	if err := json.Unmarshal(rawKey, &env); err != nil {
		return nil, Mark{}, fmt.Errorf("audit key: %w: %v", store.ErrCorrupt, err)
	}
	key, err := seal.Open(ctx, a.Master, env, keyAAD)
	if err != nil {
		return nil, Mark{}, fmt.Errorf("audit key: %w", err)
	}
	if len(key) != KeySize {
		clear(key)
		return nil, Mark{}, fmt.Errorf("audit key is %d bytes, want %d: %w", len(key), KeySize, store.ErrCorrupt)
	}
	var m Mark
	if err := json.Unmarshal(rawHead, &m); err != nil {
		clear(key)
		return nil, Mark{}, fmt.Errorf("audit head: %w: %v", store.ErrCorrupt, err)
	}
	return key, m, nil
}

// Save implements Anchor. It refuses to replace a stored key.
func (a StoreAnchor) Save(ctx context.Context, key []byte, m Mark) error {
	head, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var sealedKey []byte
	if key != nil {
		env, err := seal.Seal(ctx, a.Master, key, keyAAD)
		if err != nil {
			return fmt.Errorf("audit key: %w", err)
		}
		if sealedKey, err = json.Marshal(env); err != nil {
			return err
		}
	}
	anchorKeyKey, anchorHeadKey := a.keys()
	return a.Store.Update(ctx, func(tx store.Tx) error {
		if sealedKey != nil {
			if _, err := tx.Get(anchorKeyKey); !errors.Is(err, store.ErrNotFound) {
				if err == nil {
					err = errors.New("the store already holds an audit key; refusing to replace it")
				}
				return err
			}
			if err := tx.Put(anchorKeyKey, sealedKey); err != nil {
				return err
			}
		}
		return tx.Put(anchorHeadKey, head)
	})
}
