package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrBadHead is returned (wrapped) by ParseHead.
var ErrBadHead = errors.New("bad audit head")

// ParseHead reads a head as `coffer audit head` prints it: "SEQ:HASH"
// (Head.String), or the JSON object {"seq":N,"hash":"..."} of its -o json.
// Surrounding white space is ignored. SEQ is at least 1 and HASH is 64 hex
// digits (read as lower case).
func ParseHead(s string) (Head, error) {
	s = strings.TrimSpace(s)
	var h Head
	if strings.HasPrefix(s, "{") {
		dec := json.NewDecoder(strings.NewReader(s))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&h); err != nil {
			return Head{}, fmt.Errorf("%w: not a {\"seq\":N,\"hash\":\"...\"} object: %v", ErrBadHead, err)
		}
		if dec.More() || dec.InputOffset() != int64(len(s)) {
			return Head{}, fmt.Errorf("%w: data after the JSON object", ErrBadHead)
		}
	} else {
		seq, hash, ok := strings.Cut(s, ":")
		if !ok {
			return Head{}, fmt.Errorf("%w: want SEQ:HASH (as printed by coffer audit head)", ErrBadHead)
		}
		n, err := strconv.ParseUint(seq, 10, 64)
		if err != nil || seq != strconv.FormatUint(n, 10) {
			return Head{}, fmt.Errorf("%w: seq %q: a decimal number", ErrBadHead, trunc(seq))
		}
		h = Head{Seq: n, Hash: hash}
	}
	h.Hash = strings.ToLower(h.Hash)
	switch {
	case h.Seq == 0:
		return Head{}, fmt.Errorf("%w: seq must be at least 1", ErrBadHead)
	case len(h.Hash) != 64 || !isHex(h.Hash):
		return Head{}, fmt.Errorf("%w: hash %q: 64 hex digits", ErrBadHead, trunc(h.Hash))
	}
	return h, nil
}

func isHex(s string) bool {
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// trunc keeps error messages short whatever the input.
func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
