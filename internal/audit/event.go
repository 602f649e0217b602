package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"maps"
	"strings"
	"time"
	"unicode/utf8"
)

// Results used across Coffer. Result is free text; these are the usual ones.
const (
	ResultOK      = "ok"
	ResultDenied  = "denied"
	ResultError   = "error"
	ResultInvalid = "invalid"
)

// MaxRecordSize is the largest encoded record accepted, in bytes.
const MaxRecordSize = 64 << 10

// ErrInvalidEvent is returned (wrapped) by Append for an event it cannot record.
var ErrInvalidEvent = errors.New("invalid audit event")

// Event is one audit record. It never holds a secret value.
type Event struct {
	Seq     uint64            `json:"seq"`
	Time    time.Time         `json:"time"`
	Actor   string            `json:"actor"`             // "token:<id>", "agent:<name>", "system"
	Action  string            `json:"action"`            // e.g. "secret.put", "binding.create", "delivery.apply"
	Object  string            `json:"object,omitempty"`  // e.g. "secret:payments/db"
	Result  string            `json:"result"`            // "ok", "denied", "error", "invalid", ...
	Source  string            `json:"source,omitempty"`  // client address
	Details map[string]string `json:"details,omitempty"` // ids, versions, container names; never values
	// Server is the id of the server whose trail holds the record, when
	// several servers share one store (each keeps its own chain); "" for
	// a single server.
	Server string `json:"server,omitempty"`
	Prev   string `json:"prev"`          // hex hash of the previous record ("" for the first)
	Hash   string `json:"hash"`          // hex SHA-256 over Prev and the canonical encoding of this record without Hash and MAC
	MAC    string `json:"mac,omitempty"` // hex HMAC-SHA-256 of Hash under the trail's audit key ("" in records from before MACs)
}

// Head identifies the last record of a chain. The zero Head is an empty chain.
type Head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// String returns h as "SEQ:HASH", the form ParseHead reads.
func (h Head) String() string { return fmt.Sprintf("%d:%s", h.Seq, h.Hash) }

// body is Event without Hash and MAC: what the hash covers. Keep the fields and tags
// in step with Event.
type body struct {
	Seq     uint64            `json:"seq"`
	Time    time.Time         `json:"time"`
	Actor   string            `json:"actor"`
	Action  string            `json:"action"`
	Object  string            `json:"object,omitempty"`
	Result  string            `json:"result"`
	Source  string            `json:"source,omitempty"`
	Details map[string]string `json:"details,omitempty"`
	Server  string            `json:"server,omitempty"`
	Prev    string            `json:"prev"`
}

// chainHash is the hex SHA-256 of prev, a newline and the canonical body.
func chainHash(prev string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(prev))
	h.Write([]byte{'\n'})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// appendTail appends to b what a stored line has after its canonical body
// without the '}'.
func appendTail(b []byte, hash, mac string) []byte {
	b = append(b, `,"hash":"`...)
	b = append(b, hash...)
	if mac != "" {
		b = append(b, `","mac":"`...)
		b = append(b, mac...)
	}
	return append(b, "\"}\n"...)
}

// sealer seals records one after the other, reusing its
// hashes and scratch space from one record to the next. It is not safe for
// concurrent use: a Log's committer keeps its own (see commit), and only
// that goroutine uses it.
type sealer struct {
	key []byte    // MAC key; nil: no MACs
	sha hash.Hash // SHA-256 for chainHash
	mac hash.Hash // HMAC-SHA-256 under key for recordMAC; nil until the first MAC
	ds  []detail  // Details, for appendCanonical
	pre []byte    // what is hashed before the body (prev and '\n'), or a Mark's fields
	sum [sha256.Size]byte
	hex [2 * 2 * sha256.Size]byte // the hex hash, then the hex MAC
	out []byte                    // a flush's lines, kept for the next flush
}

// recordMACDomainBytes is recordMACDomain, for Write.
var recordMACDomainBytes = []byte(recordMACDomain)

// seal fills e's chain fields after head, and its MAC if s has a key, and
// appends its line to dst. On an error it returns dst as it was (possibly
// with more capacity) and e is not to be recorded.
func (s *sealer) seal(dst []byte, e *Event, head Head) ([]byte, error) {
	e.Seq = head.Seq + 1
	e.Prev = head.Hash
	e.Hash, e.MAC = "", ""
	start := len(dst)
	out, err := appendCanonical(dst, e, &s.ds)
	if err != nil {
		return out[:start], fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	// chainHash(e.Prev, body)
	if s.sha == nil {
		s.sha = sha256.New()
	} else {
		s.sha.Reset()
	}
	s.pre = append(append(s.pre[:0], e.Prev...), '\n')
	s.sha.Write(s.pre)
	s.sha.Write(out[start:])
	hx := s.hex[:2*sha256.Size]
	hex.Encode(hx, s.sha.Sum(s.sum[:0]))
	// recordMAC(key, hash)
	if s.key != nil {
		mac := s.hmac()
		mac.Write(recordMACDomainBytes)
		mac.Write(hx)
		hx = s.hex[:]
		hex.Encode(hx[2*sha256.Size:], mac.Sum(s.sum[:0]))
	}
	// One string for both: they are read-only, and go together.
	both := string(hx)
	e.Hash = both[:2*sha256.Size]
	if s.key != nil {
		e.MAC = both[2*sha256.Size:]
	}
	out = appendTail(out[:len(out)-1], e.Hash, e.MAC) // drop the body's '}'
	if n := len(out) - start; n > MaxRecordSize {
		e.Hash, e.MAC = "", ""
		return out[:start], fmt.Errorf("%w: record of %d bytes is larger than %d", ErrInvalidEvent, n, MaxRecordSize)
	}
	return out, nil
}

// hmac returns s's HMAC-SHA-256 under its key, reset.
func (s *sealer) hmac() hash.Hash {
	if s.mac == nil {
		s.mac = hmac.New(sha256.New, s.key)
	} else {
		s.mac.Reset()
	}
	return s.mac
}

// markMACDomainBytes is markMACDomain, for Write.
var markMACDomainBytes = []byte(markMACDomain)

// sealMark is sealMark(s.key, h, macFrom) with s's HMAC.
func (s *sealer) sealMark(h Head, macFrom uint64) Mark {
	m := Mark{Head: h, MACFrom: macFrom}
	// markMAC(key, m): the domain, seq and MACFrom big-endian, the hash.
	mac := s.hmac()
	mac.Write(markMACDomainBytes)
	s.pre = binary.BigEndian.AppendUint64(s.pre[:0], m.Seq)
	s.pre = binary.BigEndian.AppendUint64(s.pre, m.MACFrom)
	s.pre = append(s.pre, m.Hash...)
	mac.Write(s.pre)
	hx := s.hex[:2*sha256.Size]
	hex.Encode(hx, mac.Sum(s.sum[:0]))
	m.MAC = string(hx)
	return m
}

// drop forgets s's key and its MAC state (the HMAC's pads are derived from
// the key). s must not seal with a MAC afterwards.
func (s *sealer) drop() {
	s.key, s.mac, s.out = nil, nil, nil
}

// prepare checks e and returns the copy that will be recorded: its own
// Details map, Time in UTC with no monotonic reading (now if zero).
func prepare(e Event, now func() time.Time) (Event, error) {
	return prepareDetails(e, now, false)
}

// prepareOwned is prepare for an Event whose Details map the Log may keep
// as it is (AppendAll's): no copy when its text is valid UTF-8.
func prepareOwned(e Event, now func() time.Time) (Event, error) {
	return prepareDetails(e, now, true)
}

func prepareDetails(e Event, now func() time.Time, owned bool) (Event, error) {
	switch {
	case e.Actor == "":
		return e, fmt.Errorf("%w: no actor", ErrInvalidEvent)
	case e.Action == "":
		return e, fmt.Errorf("%w: no action", ErrInvalidEvent)
	case e.Result == "":
		return e, fmt.Errorf("%w: no result", ErrInvalidEvent)
	}
	if e.Time.IsZero() {
		e.Time = now()
	}
	e.Time = e.Time.UTC().Round(0)
	if y := e.Time.Year(); y < 1 || y > 9999 {
		return e, fmt.Errorf("%w: time %v out of range", ErrInvalidEvent, e.Time)
	}
	// Invalid UTF-8 would be encoded as U+FFFD and then not re-encode to
	// the same bytes: make the text valid first.
	for _, s := range []*string{&e.Actor, &e.Action, &e.Object, &e.Result, &e.Source} {
		if !utf8.ValidString(*s) {
			*s = strings.ToValidUTF8(*s, "\uFFFD")
		}
	}
	switch {
	case len(e.Details) == 0:
		e.Details = nil
	case validDetails(e.Details):
		if !owned {
			e.Details = maps.Clone(e.Details) // the usual case: a copy of the map as it is
		}
	default:
		d := make(map[string]string, len(e.Details))
		for k, v := range e.Details {
			d[strings.ToValidUTF8(k, "\uFFFD")] = strings.ToValidUTF8(v, "\uFFFD")
		}
		e.Details = d
	}
	return e, nil
}

// validDetails says whether every key and value of d is valid UTF-8.
func validDetails(d map[string]string) bool {
	for k, v := range d {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return false
		}
	}
	return true
}
