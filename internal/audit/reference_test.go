package audit

// The one-record forms of what the committer's sealer does, which the
// tests use to build and check records by hand.

// canonical returns the canonical encoding of e without Hash and MAC: what
// json.Marshal makes of body (written by appendCanonical, to the byte).
func canonical(e *Event) ([]byte, error) {
	return appendCanonical(nil, e, nil)
}

// line returns the record as stored: the body with the hash and, if not
// empty, the MAC added, and a newline.
func line(body []byte, hash, mac string) []byte {
	out := make([]byte, 0, len(body)+24+len(hash)+len(mac))
	out = append(out, body[:len(body)-1]...) // drop '}'
	return appendTail(out, hash, mac)
}

// sealRecord fills e's chain fields after head, and its MAC if key is not
// nil, and returns its line, as a fresh sealer would.
func sealRecord(e *Event, head Head, key []byte) ([]byte, error) {
	s := sealer{key: key}
	return s.seal(nil, e, head)
}
