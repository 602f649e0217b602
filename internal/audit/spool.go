package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// A Spool keeps records on their way to a Log where a killed process does
// not lose them. Records that a caller queues to append later (the
// broker's delivery records, appended in batches once a fan-out has
// settled) are first written to the spool's file with write(2), which
// puts them in the kernel's page cache: a SIGKILL, or a crash of the
// process, leaves them there. Once every record written to the spool is
// in the Log, the file is truncated.
//
// The next OpenSpool (at the next start) appends to the Log every record
// left in the file that the Log does not hold (those the process queued
// but did not append before it died), marked Details["recovered"] =
// "spool", with the time it was spooled, and then truncates the file.
// A record is matched to the Log's by its time (set when it is spooled,
// to the nanosecond) and its content.
//
// The spool is not fsynced: a power loss can lose what the page cache had
// not written back, as it can the Log's records still lingering for their
// group commit. A record may describe something the killed process was
// about to do and did not (a delivery.send written before its message was
// handed to the transport): the trail then says a little more happened
// than did, never less.
type Spool struct {
	path string

	mu      sync.Mutex
	f       *os.File
	buf     []byte
	scratch []detail
	written int // records written since the file was last truncated
	sealed  int // of those, appended to the Log
	failed  error
}

// SpoolRecovered is the detail that marks a record appended from a spool.
const SpoolRecovered = "recovered"

// OpenSpool opens (creating it, mode 0600) the spool at path, appends to
// l the records a previous process left in it that l does not hold, and
// returns the spool, emptied, and how many records it recovered (one the
// Log refuses as invalid is dropped: it could never be appended). A torn
// last line (a write cut short) is ignored; a file that cannot be read as
// a spool is refused, and left as it is.
func OpenSpool(ctx context.Context, path string, l *Log) (*Spool, int, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("audit spool: %w", err)
	}
	s := &Spool{path: path, f: f}
	n, err := s.recover(ctx, l)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("audit spool %s: %w", path, err)
	}
	return s, n, nil
}

func (s *Spool) recover(ctx context.Context, l *Log) (int, error) {
	if fi, err := s.f.Stat(); err != nil {
		return 0, err
	} else if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return 0, fmt.Errorf("mode %04o: others may read it; want 0600 (chmod 600 it)", perm)
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	es, err := ParseSpool(s.f)
	if err != nil {
		return 0, err
	}
	if len(es) == 0 {
		return 0, s.truncate()
	}
	since := es[0].Time
	for _, e := range es {
		if e.Time.Before(since) {
			since = e.Time
		}
	}
	have, err := l.Query(ctx, Filter{Since: since})
	if err != nil {
		return 0, err
	}
	held := make(map[string]bool, len(have))
	for i := range have {
		held[spoolKey(&have[i])] = true
	}
	var missing []Event
	for _, e := range es {
		if !held[spoolKey(&e)] {
			e.Details[SpoolRecovered] = "spool"
			missing = append(missing, e)
		}
	}
	slices.SortStableFunc(missing, func(a, b Event) int { return a.Time.Compare(b.Time) })
	n := 0
	for i, err := range l.AppendAll(ctx, missing) {
		switch {
		case err == nil:
			n++
		case errors.Is(err, ErrInvalidEvent):
			// Never appendable: the spool must not keep the server from
			// starting for it.
		default:
			return 0, fmt.Errorf("appending record %d of %d left from before: %w", i+1, len(missing), err)
		}
	}
	return n, s.truncate()
}

// spoolKey identifies a record by what the spool wrote of it.
func spoolKey(e *Event) string {
	var b strings.Builder
	b.WriteString(e.Time.UTC().Format(time.RFC3339Nano))
	for _, s := range []string{e.Actor, e.Action, e.Object, e.Result, e.Source} {
		b.WriteByte(0)
		b.WriteString(s)
	}
	keys := make([]string, 0, len(e.Details))
	for k := range e.Details {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b.WriteByte(0)
		b.WriteString(k)
		b.WriteByte(1)
		b.WriteString(e.Details[k])
	}
	return b.String()
}

// Add writes es to the spool in one write, each with its time set (now,
// if it has none) as the Log will record it. A record that cannot be
// encoded is skipped, and reported in the error with the rest; a failed
// write fails every later Add too (the records stay the caller's to
// append, without the spool's protection). ok reports, for each record,
// whether the spool holds it.
func (s *Spool) Add(es []*Event, now time.Time) (ok []bool, err error) {
	ok = make([]bool, len(es))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return ok, s.failed
	}
	buf := s.buf[:0]
	var errs []error
	n := 0
	for i, e := range es {
		if e.Time.IsZero() {
			e.Time = now
		}
		e.Time = e.Time.UTC().Round(0)
		start := len(buf)
		var err error
		buf, err = appendCanonical(buf, e, &s.scratch)
		if err == nil && len(buf)-start > MaxRecordSize {
			err = fmt.Errorf("%w: %d bytes encoded, over %d", ErrInvalidEvent, len(buf)-start, MaxRecordSize)
		}
		if err != nil {
			buf = buf[:start]
			errs = append(errs, err)
			continue
		}
		buf = append(buf, '\n')
		ok[i] = true
		n++
	}
	if n > 0 {
		if _, err := s.f.Write(buf); err != nil {
			s.failed = fmt.Errorf("audit spool %s: write: %w", s.path, err)
			clear(ok)
			errs = append(errs, s.failed)
		} else {
			s.written += n
		}
	}
	if cap(buf) <= maxKeptBuffer {
		s.buf = buf[:0]
	}
	return ok, errors.Join(errs...)
}

// Sealed notes that n records the spool holds are now in the Log; once all
// it holds are, the file is truncated.
func (s *Spool) Sealed(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sealed += n
	if s.sealed < s.written || s.failed != nil {
		return
	}
	if err := s.truncate(); err != nil {
		s.failed = fmt.Errorf("audit spool %s: truncate: %w", s.path, err)
	}
}

// truncate empties the file. Called with s.mu held, or before s is shared.
func (s *Spool) truncate() error {
	s.written, s.sealed = 0, 0
	return s.f.Truncate(0)
}

// Close closes the file, leaving in it what is not in the Log yet.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.Close()
}

// ParseSpool reads the records of a spool file: one JSON record per line.
// A last line without its newline (a write cut short) is ignored; any
// other line that is not a record is an error naming it.
func ParseSpool(r io.Reader) ([]Event, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	var out []Event
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			var long []byte
			long = append(long, line...)
			for errors.Is(err, bufio.ErrBufferFull) && len(long) <= MaxRecordSize+1 {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			if len(long) > MaxRecordSize+1 {
				return nil, fmt.Errorf("line %d: longer than %d bytes", n, MaxRecordSize)
			}
			line = long
		}
		if errors.Is(err, io.EOF) {
			return out, nil // nothing more, or a torn last line
		}
		if err != nil {
			return nil, err
		}
		var e Event
		d := json.NewDecoder(bytes.NewReader(line))
		d.DisallowUnknownFields()
		if err := d.Decode(&e); err != nil {
			return nil, fmt.Errorf("line %d: not a record: %w", n, err)
		}
		switch {
		case e.Time.IsZero() || e.Actor == "" || e.Action == "" || e.Result == "":
			return nil, fmt.Errorf("line %d: not a record: time, actor, action or result missing", n)
		case e.Hash != "" || e.MAC != "" || e.Prev != "" || e.Seq != 0:
			return nil, fmt.Errorf("line %d: a sealed record, not a spooled one", n)
		}
		if e.Details == nil {
			e.Details = map[string]string{}
		}
		out = append(out, e)
	}
}
