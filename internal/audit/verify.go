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

// Verify reads a trail from r and walks its chain. It returns the chain's
// Head, or a *ChainError wrapping ErrTampered at the first record that does
// not follow from the one before it (edited, removed, inserted, reordered,
// or not in canonical form), or wrapping ErrTorn if the last line is
// incomplete. If want is not nil, the chain must also end exactly at *want,
// which catches a removed tail. Other errors are read errors.
func Verify(r io.Reader, want *Head) (Head, error) {
	var (
		head Head
		n    int
		off  int64
	)
	br := bufio.NewReaderSize(r, 1<<16)
	for {
		raw, err := readLine(br)
		if len(raw) == 0 && err == io.EOF {
			break
		}
		n++
		fail := func(seq uint64, err error, format string, args ...any) (Head, error) {
			return head, &ChainError{Line: n, Offset: off, Seq: seq, Reason: fmt.Sprintf(format, args...), Err: err}
		}
		switch {
		case err == io.EOF:
			var e Event
			_ = json.Unmarshal(raw, &e)
			return fail(e.Seq, ErrTorn, "%d bytes without a final newline (a write that never completed)", len(raw))
		case errors.Is(err, errLineTooLong):
			return fail(0, ErrTampered, "line longer than %d bytes", MaxRecordSize)
		case err != nil:
			return head, err
		}
		e, reason := check(raw, head)
		if reason != "" {
			return fail(e.Seq, ErrTampered, "%s", reason)
		}
		head = Head{Seq: e.Seq, Hash: e.Hash}
		off += int64(len(raw))
	}
	if want != nil && head != *want {
		if head.Seq < want.Seq {
			return head, &ChainError{Line: n, Seq: head.Seq, Err: ErrTampered,
				Reason: fmt.Sprintf("chain ends at seq %d, want seq %d: records removed from the end", head.Seq, want.Seq)}
		}
		return head, &ChainError{Line: n, Seq: head.Seq, Err: ErrTampered,
			Reason: fmt.Sprintf("chain ends at seq %d hash %.12s…, want seq %d hash %.12s…", head.Seq, head.Hash, want.Seq, want.Hash)}
	}
	return head, nil
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
	body, ok := bodyOf(raw, e.Hash)
	if !ok {
		return e, "not in canonical form: the line was edited"
	}
	if chainHash(e.Prev, body) != e.Hash {
		return e, "hash mismatch: the record was edited"
	}
	return e, ""
}

// bodyOf returns the canonical body a stored line was made from: the line
// without its `,"hash":"<hash>"}` tail, closed again with '}'. It reports
// false if the line does not end that way.
func bodyOf(raw []byte, hash string) ([]byte, bool) {
	tail := `,"hash":"` + hash + "\"}\n"
	if len(hash) != 64 || !bytes.HasSuffix(raw, []byte(tail)) {
		return nil, false
	}
	body := make([]byte, 0, len(raw)-len(tail)+1)
	body = append(body, raw[:len(raw)-len(tail)]...)
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
