package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

var (
	// ErrTampered is returned (wrapped in a *ChainError) when the chain is
	// broken: a record was edited, removed, inserted or reordered.
	ErrTampered = errors.New("audit trail tampered")
	// ErrTorn is returned (wrapped in a *ChainError) when the last line has
	// no newline: a write that never completed, as a crash leaves it. Its
	// Append did not succeed.
	ErrTorn = errors.New("audit trail has a torn last record")
)

// ChainError says where and why a chain fails to verify. Err is ErrTampered
// or ErrTorn.
type ChainError struct {
	Line   int    // 1-based line number
	Offset int64  // byte offset of the line's start
	Seq    uint64 // seq the record claims, if it could be read
	Reason string
	Err    error
}

func (e *ChainError) Error() string {
	if e.Seq == 0 {
		return fmt.Sprintf("%v: line %d: %s", e.Err, e.Line, e.Reason)
	}
	return fmt.Sprintf("%v: line %d (seq %d): %s", e.Err, e.Line, e.Seq, e.Reason)
}

func (e *ChainError) Unwrap() error { return e.Err }

// VerifyOptions say what Verify checks besides the chain itself.
type VerifyOptions struct {
	// End, if not nil: the chain must end exactly at *End (the head of a
	// live Log), which catches a removed tail.
	End *Head
	// Through, if not nil: the chain must contain the record *Through
	// names, with that seq and hash; it may go on after it. A head
	// exported earlier (coffer audit head) catches a removed tail and a
	// history rewritten up to it.
	Through *Head
	// Key, if not nil, is the trail's MAC key: every MAC must match, and
	// every record from seq MACFrom on must carry one. A whole trail
	// rewritten with recomputed hashes fails here.
	Key     []byte
	MACFrom uint64
}

// Verify reads a trail from r and walks its chain. It returns the chain's
// Head, or a *ChainError wrapping ErrTampered at the first record that does
// not follow from the one before it (edited, removed, inserted, reordered,
// or not in canonical form), or wrapping ErrTorn if the last line is
// incomplete. If want is not nil, the chain must also end exactly at *want,
// which catches a removed tail. Other errors are read errors.
//
// Without a key, Verify cannot check MACs, only that once a record carries
// one, every later record does too.
func Verify(r io.Reader, want *Head) (Head, error) {
	return VerifyWith(r, VerifyOptions{End: want})
}

// VerifyWith is Verify with more checks: see VerifyOptions.
func VerifyWith(r io.Reader, o VerifyOptions) (Head, error) {
	w, err := walk(r, o)
	if err != nil {
		return w.head, err
	}
	return w.head, w.checkEnd(o)
}

// walked is what walk found.
type walked struct {
	head     Head
	lines    int
	firstMAC uint64 // seq of the first record with a MAC; 0: none
}

// walk checks each record of the trail in r: its chain link, its MAC and,
// at o.Through's seq, its hash. It does not check where the chain ends
// (checkEnd does).
func walk(r io.Reader, o VerifyOptions) (walked, error) {
	var (
		w   walked
		off int64
	)
	br := bufio.NewReaderSize(r, 1<<16)
	for {
		raw, err := readLine(br)
		if len(raw) == 0 && err == io.EOF {
			break
		}
		w.lines++
		fail := func(seq uint64, err error, format string, args ...any) (walked, error) {
			return w, &ChainError{Line: w.lines, Offset: off, Seq: seq, Reason: fmt.Sprintf(format, args...), Err: err}
		}
		switch {
		case err == io.EOF:
			var e Event
			_ = json.Unmarshal(raw, &e)
			return fail(e.Seq, ErrTorn, "%d bytes without a final newline (a write that never completed)", len(raw))
		case errors.Is(err, errLineTooLong):
			return fail(0, ErrTampered, "line longer than %d bytes", MaxRecordSize)
		case err != nil:
			return w, err
		}
		e, reason := check(raw, w.head)
		if reason == "" {
			reason = checkMAC(&e, w.firstMAC, o)
		}
		if reason == "" && o.Through != nil && e.Seq == o.Through.Seq && e.Hash != o.Through.Hash {
			reason = fmt.Sprintf("hash %s, but the given head says %s: the history up to that head was rewritten", e.Hash, o.Through.Hash)
		}
		if reason != "" {
			return fail(e.Seq, ErrTampered, "%s", reason)
		}
		if e.MAC != "" && w.firstMAC == 0 {
			w.firstMAC = e.Seq
		}
		w.head = Head{Seq: e.Seq, Hash: e.Hash}
		off += int64(len(raw))
	}
	return w, nil
}

// checkEnd checks where a walked chain ends against o.Through and o.End.
func (w walked) checkEnd(o VerifyOptions) error {
	head := w.head
	if o.Through != nil && head.Seq < o.Through.Seq {
		return &ChainError{Line: w.lines, Seq: head.Seq, Err: ErrTampered,
			Reason: fmt.Sprintf("chain ends at seq %d, before the given head %s: records removed from the end", head.Seq, o.Through)}
	}
	if want := o.End; want != nil && head != *want {
		if head.Seq < want.Seq {
			return &ChainError{Line: w.lines, Seq: head.Seq, Err: ErrTampered,
				Reason: fmt.Sprintf("chain ends at seq %d, want seq %d: records removed from the end", head.Seq, want.Seq)}
		}
		return &ChainError{Line: w.lines, Seq: head.Seq, Err: ErrTampered,
			Reason: fmt.Sprintf("chain ends at seq %d hash %.12s…, want seq %d hash %.12s…", head.Seq, head.Hash, want.Seq, want.Hash)}
	}
	return nil
}

// checkMAC says what is wrong with e's MAC, or "" if nothing. firstMAC is
// the seq of the first record before e that carried one.
func checkMAC(e *Event, firstMAC uint64, o VerifyOptions) string {
	switch {
	case e.MAC == "" && firstMAC != 0:
		return fmt.Sprintf("no MAC, but the records from seq %d on carry one: record replaced or forged", firstMAC)
	case e.MAC == "" && o.Key != nil && e.Seq >= o.MACFrom:
		return fmt.Sprintf("no MAC, but every record from seq %d on carries one: the trail was rewritten", o.MACFrom)
	case e.MAC != "" && o.Key != nil && !macEqual(e.MAC, recordMAC(o.Key, e.Hash)):
		return "MAC mismatch: the record was not written by this server (forged, or the trail rewritten with recomputed hashes)"
	}
	return ""
}

// check decodes one line (with its newline) and says what is wrong with it
// as the successor of head, or "" if nothing. The hash is computed over the
// line's own bytes, so any change to them, even one that decodes to the same
// record, is a mismatch.
func check(raw []byte, head Head) (Event, string) {
	var e Event
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return e, fmt.Sprintf("not a record: %v", err)
	}
	want := head.Seq + 1
	switch {
	case e.Seq != want && head.Seq == 0:
		return e, fmt.Sprintf("the chain starts at seq %d, not 1: records removed from the start", e.Seq)
	case e.Seq > want:
		return e, fmt.Sprintf("seq %d follows seq %d: records removed or reordered", e.Seq, head.Seq)
	case e.Seq < want:
		return e, fmt.Sprintf("seq %d follows seq %d: record inserted, repeated or reordered", e.Seq, head.Seq)
	case e.Prev != head.Hash:
		return e, "prev does not match the hash of the record before: record replaced, inserted or reordered"
	}
	body, ok := bodyOf(raw, e.Hash, e.MAC)
	if !ok {
		return e, "not in canonical form: the line was edited"
	}
	if chainHash(e.Prev, body) != e.Hash {
		return e, "hash mismatch: the record was edited"
	}
	return e, ""
}

// bodyOf returns the canonical body a stored line was made from: the line
// without its `,"hash":"<hash>"}` or `,"hash":"<hash>","mac":"<mac>"}`
// tail, closed again with '}'. It reports false if the line does not end
// that way.
func bodyOf(raw []byte, hash, mac string) ([]byte, bool) {
	if len(hash) != 64 || (mac != "" && len(mac) != 64) {
		return nil, false
	}
	var buf [160]byte // the longest tail is 149 bytes
	t := appendTail(buf[:0], hash, mac)
	if !bytes.HasSuffix(raw, t) {
		return nil, false
	}
	body := make([]byte, 0, len(raw)-len(t)+1)
	body = append(body, raw[:len(raw)-len(t)]...)
	return append(body, '}'), true
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line with its newline; at the end of input, the
// bytes after the last newline (if any) and io.EOF.
func readLine(br *bufio.Reader) ([]byte, error) {
	var out []byte
	for {
		chunk, err := br.ReadSlice('\n')
		out = append(out, chunk...)
		if len(out) > MaxRecordSize {
			return out, errLineTooLong
		}
		if err != bufio.ErrBufferFull {
			return out, err
		}
	}
}
