package audit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
)

// KeySize is the size of a trail's MAC key in bytes.
const KeySize = 32

// ErrNotAnchored is returned by Anchor.Load when nothing has been saved yet:
// a new data dir, or one whose trail predates anchoring.
var ErrNotAnchored = errors.New("audit trail not anchored yet")

// Mark is what a Log keeps in its Anchor after each group commit: the head
// of the chain, from which seq on records carry a MAC, and a MAC over both.
type Mark struct {
	Head
	// MACFrom is the first seq whose record carries a MAC. A trail that
	// predates MACs keeps its older records as they are: MACFrom is the seq
	// after the head it had when it was first anchored.
	MACFrom uint64 `json:"mac_from"`
	// MAC is the hex HMAC-SHA-256 of the fields above under the trail's
	// key, so that the Mark cannot be edited without the key either.
	MAC string `json:"mac"`
}

// Anchor keeps, outside the trail file, what lets Open notice a trail that
// was cut or rewritten while no Log had it open: the trail's MAC key and the
// Mark of its last group commit. Coffer's server keeps both in its store,
// the key sealed under the master key ([StoreAnchor]). Implementations need
// not be safe for concurrent use: a Log calls them from one goroutine at a
// time.
type Anchor interface {
	// Load returns the stored key and Mark, or ErrNotAnchored if nothing
	// has been saved yet.
	Load(ctx context.Context) (key []byte, m Mark, err error)
	// Save stores m durably before it returns. key is not nil on the
	// first Save only, for a new key: it must be stored in the same atomic
	// write as m.
	Save(ctx context.Context, key []byte, m Mark) error
}

// Domain strings of the two MACs, so that a record's MAC is never a
// Mark's.
const (
	recordMACDomain = "coffer/audit/record/v1\n"
	markMACDomain   = "coffer/audit/mark/v1\n"
	spoolMACDomain  = "coffer/audit/spool/v1\n"
)

// recordMAC is the hex HMAC-SHA-256 of a record's hash. The hash covers the
// record and, through prev, every record before it.
func recordMAC(key []byte, hash string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(recordMACDomain))
	m.Write([]byte(hash))
	return hex.EncodeToString(m.Sum(nil))
}

// markMAC is the hex HMAC-SHA-256 of a Mark's seq, hash and MACFrom.
func markMAC(key []byte, m Mark) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(markMACDomain))
	var n [16]byte
	binary.BigEndian.PutUint64(n[:8], m.Seq)
	binary.BigEndian.PutUint64(n[8:], m.MACFrom)
	h.Write(n[:])
	h.Write([]byte(m.Hash))
	return hex.EncodeToString(h.Sum(nil))
}

// macEqual compares two hex MACs in constant time.
func macEqual(a, b string) bool { return hmac.Equal([]byte(a), []byte(b)) }

// sealMark returns m with its MAC under key.
func sealMark(key []byte, h Head, macFrom uint64) Mark {
	m := Mark{Head: h, MACFrom: macFrom}
	m.MAC = markMAC(key, m)
	return m
}
