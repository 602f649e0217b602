package seal

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
)

// Keyring is implemented by a KeyWrapper that holds several master keys:
// [Open] asks it for the key an envelope names ([Envelope.KeyID]) instead of
// requiring the envelope to be sealed under KeyID().
type Keyring interface {
	KeyWrapper
	// ForKeyID returns the master key whose KeyID is id, if held.
	ForKeyID(id string) (KeyWrapper, bool)
}

// Rewrapper is implemented by a master key that can move a wrapped data key
// to its newest key version inside the KMS, without the data key leaving it
// (Vault Transit's rewrap after a key rotation).
type Rewrapper interface {
	KeyWrapper
	Rewrap(ctx context.Context, wrapped []byte) ([]byte, error)
	// KeyVersion names the key version a wrapped data key was made under
	// ("" if unknown), so that a rewrap that changed nothing is not written.
	KeyVersion(wrapped []byte) string
}

// Ring is a Keyring: it wraps new data keys with its primary master key and
// opens envelopes sealed under the primary or any previous master key. It is
// what the server uses while a store moves from one master key to another
// (see catalog.Rewrap). A Ring is immutable and safe for concurrent use.
type Ring struct {
	primary  KeyWrapper
	previous []KeyWrapper
	byID     map[string]KeyWrapper
}

var _ Keyring = (*Ring)(nil)

// NewRing returns a Ring wrapping with primary. Two keys with the same KeyID
// are an error: an envelope must name exactly one of them.
func NewRing(primary KeyWrapper, previous ...KeyWrapper) (*Ring, error) {
	r := &Ring{primary: primary, previous: previous, byID: map[string]KeyWrapper{primary.KeyID(): primary}}
	for _, p := range previous {
		if _, dup := r.byID[p.KeyID()]; dup {
			return nil, fmt.Errorf("master key %s is configured twice (as the key and as a previous key)", p.KeyID())
		}
		r.byID[p.KeyID()] = p
	}
	return r, nil
}

// Wrap implements KeyWrapper with the primary key.
func (r *Ring) Wrap(ctx context.Context, dek []byte) ([]byte, error) { return r.primary.Wrap(ctx, dek) }

// Unwrap implements KeyWrapper with the primary key.
func (r *Ring) Unwrap(ctx context.Context, wrapped []byte) ([]byte, error) {
	return r.primary.Unwrap(ctx, wrapped)
}

// KeyID implements KeyWrapper: the primary key's id, recorded in new envelopes.
func (r *Ring) KeyID() string { return r.primary.KeyID() }

// ForKeyID implements Keyring.
func (r *Ring) ForKeyID(id string) (KeyWrapper, bool) { w, ok := r.byID[id]; return w, ok }

// Primary returns the key new data keys are wrapped with.
func (r *Ring) Primary() KeyWrapper { return r.primary }

// Previous returns the keys that only open envelopes.
func (r *Ring) Previous() []KeyWrapper { return append([]KeyWrapper(nil), r.previous...) }

// KeyIDs returns the ids of all keys, the primary's first.
func (r *Ring) KeyIDs() []string {
	ids := []string{r.primary.KeyID()}
	for _, p := range r.previous {
		ids = append(ids, p.KeyID())
	}
	return ids
}

// Close closes every key that has a Close method (LocalKey zeroes itself).
func (r *Ring) Close() {
	for _, w := range append([]KeyWrapper{r.primary}, r.previous...) {
		if c, ok := w.(interface{ Close() }); ok {
			c.Close()
		}
	}
}

// Probe wraps and unwraps a random throw-away data key with kw, so that a
// master key that cannot be used (KMS unreachable, key missing, no
// permission) is found at start rather than at the first write. The
// throw-away key protects nothing and is zeroed.
func Probe(ctx context.Context, kw KeyWrapper) error {
	dek := make([]byte, DEKSize)
	defer clear(dek)
	if _, err := rand.Read(dek); err != nil {
		return err
	}
	wrapped, err := kw.Wrap(ctx, dek)
	if err != nil {
		return fmt.Errorf("master key %s: wrap a test data key: %w", kw.KeyID(), err)
	}
	back, err := kw.Unwrap(ctx, wrapped)
	defer clear(back)
	if err != nil {
		return fmt.Errorf("master key %s: unwrap a test data key: %w", kw.KeyID(), err)
	}
	if !bytes.Equal(back, dek) {
		return fmt.Errorf("%w: master key %s: a test data key did not unwrap to itself", ErrDecrypt, kw.KeyID())
	}
	return nil
}
