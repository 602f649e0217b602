package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A Spool keeps records on their way to a Log where a killed process does
// not lose them. Records that a caller queues to append later (the
// broker's delivery records, appended in batches once a fan-out has
// settled) are first written to the spool with write(2), which puts them
// in the kernel's page cache: a SIGKILL, or a crash of the process, leaves
// them there.
//
// The spool is two files, path and path.1, written in turn: once the one
// being written holds spoolRotate bytes, the next records go to the other
// (if it is empty), and each file is emptied once every record written to
// it is in the Log. So a steady flow of records, which never leaves the
// spool without one on its way, keeps it to about two files' size.
//
// The next OpenSpool (at the next start) appends to the Log every record
// left in either file that the Log does not hold (those the process queued
// but did not append before it died), marked Details["recovered"] =
// "spool", with the time it was spooled, and then empties both. A record
// is matched to the Log's by its time (set when it is spooled, to the
// nanosecond) and its content.
//
// With an audit key (a Log with an Anchor) each write ends in a line with
// the HMAC-SHA-256 of its records under that key, as the trail's records
// carry theirs; a MAC that fails is refused, and records without one are
// not taken: whoever can write the data dir but not read the store cannot
// have a record of their own making appended.
//
// A caller may hand a record packed in an encoding of its own instead of
// as an Event (AddPacked): the spool writes it as a line "@", its time in
// nanoseconds since 1970, a space and the bytes in base64, and the next
// OpenSpool reads it back with SpoolOptions.Unpack. The broker packs its
// delivery records so: a fan-out writes one for every container it sends
// to before the value may leave, and a record packed costs half as much
// as one encoded as canonical JSON (BenchmarkSpoolDelivery).
//
// The spool is not fsynced: a power loss can lose what the page cache had
// not written back, as it can the Log's records still lingering for their
// group commit. A record may describe something the killed process was
// about to do and did not (a delivery.send written before its message was
// handed to the transport): the trail then says a little more happened
// than did, never less.
type Spool struct {
	mu      sync.Mutex
	mac     hash.Hash // HMAC-SHA-256 under the trail's audit key; nil without one
	files   [2]*spoolFile
	gen     uint64 // generation of the file being written: files[gen%2]
	buf     []byte
	pack    []byte // for AddPacked's callers to pack a record into
	scratch []detail
	failed  error
}

// spoolFile is one of a Spool's files.
type spoolFile struct {
	path    string
	f       *os.File
	size    int64
	written int // records written since it was last emptied
	sealed  int // of those, appended to the Log
}

// spoolRotate is the size at which a Spool moves on to its other file.
const spoolRotate = 4 << 20

// SpoolRecovered is the detail that marks a record appended from a spool.
const SpoolRecovered = "recovered"

// SpoolOptions tune OpenSpool.
type SpoolOptions struct {
	// Unpack reads back a record written packed (AddPacked) by an earlier
	// process: the bytes its pack appended. The spool sets the Event's
	// time. Without it, a spool holding a packed record is refused.
	Unpack func(packed []byte) (Event, error)
}

// OpenSpool opens (creating them, mode 0600) the spool at path, appends to
// l the records a previous process left in it that l does not hold, and
// returns the spool, emptied, and how many records it recovered (one the
// Log refuses as invalid is dropped: it could never be appended). A torn
// last line (a write cut short) is ignored; a file that cannot be read as
// a spool is refused, and left as it is.
func OpenSpool(ctx context.Context, path string, l *Log, opts SpoolOptions) (*Spool, int, error) {
	s := &Spool{}
	if l.key != nil {
		s.mac = hmac.New(sha256.New, l.key)
	}
	for i, p := range []string{path, path + ".1"} {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			s.closeFiles()
			return nil, 0, fmt.Errorf("audit spool: %w", err)
		}
		s.files[i] = &spoolFile{path: p, f: f}
	}
	n, err := s.recover(ctx, l, opts.Unpack)
	if err != nil {
		s.closeFiles()
		return nil, 0, fmt.Errorf("audit spool %s: %w", path, err)
	}
	return s, n, nil
}

func (s *Spool) recover(ctx context.Context, l *Log, unpack func([]byte) (Event, error)) (int, error) {
	var es []Event
	for _, sf := range s.files {
		fi, err := sf.f.Stat()
		if err != nil {
			return 0, err
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			return 0, fmt.Errorf("%s: mode %04o: others may read it; want 0600 (chmod 600 it)", sf.path, perm)
		}
		if _, err := sf.f.Seek(0, io.SeekStart); err != nil {
			return 0, err
		}
		got, err := parseSpool(sf.f, s.mac, unpack)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", sf.path, err)
		}
		es = append(es, got...)
	}
	if len(es) == 0 {
		return 0, s.emptyAll()
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
	return n, s.emptyAll()
}

func (s *Spool) emptyAll() error {
	for _, sf := range s.files {
		if err := sf.empty(); err != nil {
			return err
		}
	}
	return nil
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
// if it has none) as the Log will record it, and returns the generation
// they were written to, for Sealed. A record that cannot be encoded is
// skipped, and reported in the error with the rest; a failed write fails
// every later Add too (the records stay the caller's to append, without
// the spool's protection). ok reports, for each record, whether the spool
// holds it.
func (s *Spool) Add(es []*Event, now time.Time) (ok []bool, gen uint64, err error) {
	return s.AddFunc(len(es), func(i int) *Event { return es[i] }, now)
}

// AddFunc is Add for n records made one at a time: event(i) is the i-th,
// encoded (and its time set) before event is called again, so that a
// caller may hand over one Event, and one Details map, for all of them.
func (s *Spool) AddFunc(n int, event func(i int) *Event, now time.Time) (ok []bool, gen uint64, err error) {
	return s.AddPacked(n, func(i int, _ []byte) (*Event, []byte) { return event(i), nil }, now)
}

// AddPacked is AddFunc for records that may come packed: record(i) returns
// the i-th as an Event (written as AddFunc writes it), or nil and the
// record packed in the caller's own encoding, appended to buf (a buffer
// the spool reuses). A packed record is spooled with the time now; the
// SpoolOptions.Unpack of the next OpenSpool must read it back. A packed
// record over MaxRecordSize is refused like an Event that is.
func (s *Spool) AddPacked(n int, record func(i int, buf []byte) (*Event, []byte), now time.Time) (ok []bool, gen uint64, err error) {
	ok = make([]bool, n)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return ok, 0, s.failed
	}
	now = now.UTC().Round(0)
	buf := s.buf[:0]
	var errs []error
	written := 0
	for i := range n {
		e, packed := record(i, s.pack[:0])
		start := len(buf)
		var err error
		if e != nil {
			if e.Time.IsZero() {
				e.Time = now
			}
			e.Time = e.Time.UTC().Round(0)
			buf, err = appendCanonical(buf, e, &s.scratch)
		} else {
			if cap(packed) <= maxKeptBuffer {
				s.pack = packed[:0]
			}
			buf = append(buf, '@')
			buf = strconv.AppendInt(buf, now.UnixNano(), 10)
			buf = append(buf, ' ')
			buf = base64.RawStdEncoding.AppendEncode(buf, packed)
		}
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
		written++
	}
	if written > 0 && s.mac != nil {
		// One MAC for the write: a trailer line over its records.
		buf = append(buf, '#')
		buf = hex.AppendEncode(buf, spoolBatchMAC(s.mac, buf[:len(buf)-1]))
		buf = append(buf, '\n')
	}
	if written > 0 {
		if cur, next := s.files[s.gen%2], s.files[(s.gen+1)%2]; cur.size >= spoolRotate && next.written == 0 {
			s.gen++ // next is empty: all it held is in the Log
		}
		sf := s.files[s.gen%2]
		if _, err := sf.f.Write(buf); err != nil {
			s.failed = fmt.Errorf("audit spool %s: write: %w", sf.path, err)
			clear(ok)
			errs = append(errs, s.failed)
		} else {
			sf.written += written
			sf.size += int64(len(buf))
		}
	}
	if cap(buf) <= maxKeptBuffer {
		s.buf = buf[:0]
	}
	return ok, s.gen, errors.Join(errs...)
}

// Sealed notes that n records Add wrote to generation gen are now in the
// Log; once all its file holds are, the file is emptied.
func (s *Spool) Sealed(gen uint64, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen > s.gen || gen+1 < s.gen || s.failed != nil {
		return // not a generation a file holds
	}
	sf := s.files[gen%2]
	sf.sealed += n
	if sf.sealed < sf.written {
		return
	}
	if err := sf.empty(); err != nil {
		s.failed = fmt.Errorf("audit spool %s: truncate: %w", sf.path, err)
	}
}

// empty truncates the file. Called with the Spool's mu held, or before it
// is shared.
func (sf *spoolFile) empty() error {
	sf.written, sf.sealed, sf.size = 0, 0, 0
	return sf.f.Truncate(0)
}

// Close closes the files, leaving in them what is not in the Log yet.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeFiles()
}

func (s *Spool) closeFiles() error {
	var errs []error
	for _, sf := range s.files {
		if sf != nil {
			errs = append(errs, sf.f.Close())
		}
	}
	return errors.Join(errs...)
}

// spoolBatchMAC is the HMAC under m's key of the records of one write.
func spoolBatchMAC(m hash.Hash, records []byte) []byte {
	m.Reset()
	m.Write([]byte(spoolMACDomain))
	m.Write(records)
	return m.Sum(nil)
}

// parseSpool reads the records of a spool file: one JSON record per line.
// A last line without its newline (a write cut short) is ignored; any
// other line that is not a record is an error naming it. With mac, each
// write's records are followed by a line "#" and the hex MAC of their
// lines, and records are taken only with a trailer that verifies; records
// after the last trailer (a write cut short) are ignored.
func parseSpool(r io.Reader, mac hash.Hash, unpack func([]byte) (Event, error)) ([]Event, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	var (
		out   []Event
		batch []Event
		raw   []byte // the batch's lines, for its MAC
	)
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
			if mac == nil {
				out = append(out, batch...)
			}
			return out, nil // nothing more, or a write cut short
		}
		if err != nil {
			return nil, err
		}
		if line[0] == '#' {
			if mac == nil {
				return nil, fmt.Errorf("line %d: a MAC, and the trail has no audit key", n)
			}
			got, err := hex.DecodeString(string(line[1 : len(line)-1]))
			if err != nil || len(batch) == 0 || !hmac.Equal(got, spoolBatchMAC(mac, raw)) {
				return nil, fmt.Errorf("line %d: wrong MAC: not written by this trail's server", n)
			}
			out, batch, raw = append(out, batch...), batch[:0], raw[:0]
			continue
		}
		if mac != nil {
			raw = append(raw, line...)
		}
		var e Event
		if line[0] == '@' {
			if e, err = unpackLine(line[1:len(line)-1], unpack); err != nil {
				return nil, fmt.Errorf("line %d: not a record: %w", n, err)
			}
		} else {
			d := json.NewDecoder(bytes.NewReader(line[:len(line)-1]))
			d.DisallowUnknownFields()
			if err := d.Decode(&e); err != nil {
				return nil, fmt.Errorf("line %d: not a record: %w", n, err)
			}
			if d.More() {
				return nil, fmt.Errorf("line %d: not a record: more after it", n)
			}
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
		if mac != nil {
			batch = append(batch, e)
		} else {
			out = append(out, e)
		}
	}
}

// unpackLine reads a packed record's line (without its "@" and newline):
// its time in nanoseconds, a space, and the bytes unpack reads, in base64.
func unpackLine(line []byte, unpack func([]byte) (Event, error)) (Event, error) {
	if unpack == nil {
		return Event{}, errors.New("a packed record, and nothing given to read one")
	}
	ns, b64, ok := bytes.Cut(line, []byte{' '})
	if !ok {
		return Event{}, errors.New("a packed record without its time")
	}
	t, err := strconv.ParseInt(string(ns), 10, 64)
	if err != nil || t <= 0 {
		return Event{}, fmt.Errorf("a packed record's time %q is not a positive count of nanoseconds", ns)
	}
	packed, err := base64.RawStdEncoding.AppendDecode(nil, b64)
	if err != nil {
		return Event{}, fmt.Errorf("a packed record is not base64: %w", err)
	}
	e, err := unpack(packed)
	if err != nil {
		return Event{}, err
	}
	e.Time = time.Unix(0, t).UTC()
	return e, nil
}
