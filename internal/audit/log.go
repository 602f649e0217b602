package audit

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// ErrClosed is returned by a Log's methods after Close.
var ErrClosed = errors.New("audit log closed")

// ErrFailed is returned (wrapped, with the first cause) by Append once a
// write or fsync has failed: the log accepts nothing more until reopened.
var ErrFailed = errors.New("audit log failed")

// ErrBehind is returned (wrapped) by Open when the trail file ends before
// the head its Anchor holds: records were cut from its end, or the file was
// replaced by an older copy or removed, while no Log had it open.
var ErrBehind = errors.New("audit trail ends before its anchored head")

// DefaultMaxBatch is the most records committed by one write and fsync when
// Options.MaxBatch is zero.
const DefaultMaxBatch = 4096

// Options configure a Log. The zero Options are usable.
type Options struct {
	Logger   *slog.Logger     // nil: discard
	Now      func() time.Time // clock for events without a Time; nil: time.Now
	MaxBatch int              // most records per write+fsync; 0: DefaultMaxBatch
	// Anchor, if set, keeps the trail's MAC key and head outside the file
	// (see Open); nil: no MACs, and nothing outside the file.
	Anchor Anchor
	// Server, if set, is written into every record (Event.Server): the
	// id of the server whose trail this is, among several sharing a store.
	Server string
	// Reanchor lets Open accept a trail that ends before its anchored head
	// (or is missing): after an investigation, to carry on with what is
	// left or with a new file. The loss is logged and recorded as the
	// first record Open appends ("audit.reanchor"). Records that fail their
	// MAC are refused all the same.
	Reanchor bool
	// Linger is how long records given to AppendAll (background records:
	// the broker's delivery records, thousands per rollout) may wait for
	// more before their group commit, so that a rollout costs a few
	// writes, fsyncs and anchor saves instead of one per burst. An Append
	// (a caller waiting, as an API request does) never waits: it is
	// committed at once, together with whatever is queued. 0: no waiting.
	Linger time.Duration
}

// Log is an append-only, hash-chained audit trail in one file. It is safe
// for concurrent use.
type Log struct {
	path string
	f    *os.File
	log  *slog.Logger
	now  func() time.Time
	max  int

	// write and sync are f.Write and f.Sync; tests replace them.
	write func([]byte) (int, error)
	sync  func() error

	server  string        // Options.Server
	linger  time.Duration // Options.Linger
	anchor  Anchor        // nil: none
	key     []byte        // MAC key; nil without an Anchor; zeroed by Close
	macFrom uint64        // first seq that carries a MAC

	mu     sync.Mutex
	queue  []*pending
	urgent int       // records in queue from Append: commit at once
	since  time.Time // when the oldest record in queue was queued
	head   Head      // last durable record
	size   int64     // bytes of durable records
	closed bool
	failed error // first write, fsync or anchor error
	wake   chan struct{}
	done   chan struct{} // closed when the committer (and the anchorer) have stopped

	// With an Anchor, groups written to the file wait in anchoring for
	// their Mark, which the anchorer saves while the committer writes the
	// next group.
	anchoring  []group
	anchorWake chan struct{} // closed by the committer when it stops
}

// group is a group commit's records, written and fsynced, and its head.
type group struct {
	ps   []*pending
	head Head
}

type pending struct {
	e      Event
	err    error
	out    chan struct{}
	urgent bool // from Append: committed without lingering
}

// Open opens the trail at path, creating it (mode 0600) if it does not
// exist. An existing file is verified in full: a torn last line (ErrTorn)
// or a broken chain (ErrTampered) is refused with the line where it breaks,
// and the file is left exactly as it is. Open takes an exclusive lock on the
// file, so a second Log on the same file fails instead of forking the chain.
//
// With an Anchor, Open also checks the file against the Mark saved after the
// last group commit, and refuses (changing nothing, neither the file nor
// the Anchor) a file that ends before it (ErrBehind) or does not contain it,
// or a record with a missing or wrong MAC (ErrTampered). A file ahead of the
// Mark, as a crash between a group's fsync and its Mark leaves it, is
// accepted and re-anchored. The first Open with an Anchor that holds
// nothing creates the MAC key and saves it with the file's head: the
// records already there stay without MACs, every later record has one.
func Open(path string, opts Options) (*Log, error) {
	var a loaded
	if opts.Anchor != nil {
		var err error
		if a, err = load(opts.Anchor); err != nil {
			return nil, fmt.Errorf("audit: %s: %w", path, err)
		}
	}
	flags := os.O_RDWR | os.O_APPEND
	if !a.ok || a.mark.Seq == 0 || opts.Reanchor {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		clear(a.key)
		return nil, fmt.Errorf("audit: %s does not exist, but the store anchors the trail's head at seq %d hash %s: %w; nothing was changed: restore the file from a backup, or, after an investigation, start once with re-anchoring (coffer-server --audit-reanchor) to begin a new trail",
			path, a.mark.Seq, a.mark.Hash, ErrBehind)
	}
	if err != nil {
		clear(a.key)
		return nil, fmt.Errorf("audit: open: %w", err)
	}
	l, err := open(path, f, opts, a)
	if err != nil {
		clear(a.key)
		f.Close()
		return nil, fmt.Errorf("audit: open %s: %w", path, err)
	}
	return l, nil
}

// loaded is what an Anchor held at Open.
type loaded struct {
	ok   bool // false: nothing anchored yet
	key  []byte
	mark Mark
}

func load(an Anchor) (loaded, error) {
	key, m, err := an.Load(context.Background())
	switch {
	case errors.Is(err, ErrNotAnchored):
		return loaded{}, nil
	case err != nil:
		return loaded{}, fmt.Errorf("load the anchored head: %w", err)
	case len(key) != KeySize:
		clear(key)
		return loaded{}, fmt.Errorf("the audit key is %d bytes, want %d", len(key), KeySize)
	case !macEqual(m.MAC, markMAC(key, m)):
		clear(key)
		return loaded{}, fmt.Errorf("%w: the head anchored in the store (seq %d) fails its MAC: it was edited, or its key replaced; nothing was changed", ErrTampered, m.Seq)
	}
	return loaded{ok: true, key: key, mark: m}, nil
}

func open(path string, f *os.File, opts Options, a loaded) (*Log, error) {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return nil, fmt.Errorf("locked by another process or Log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("mode %04o: others may read the trail; want 0600 (chmod 600 it)", perm)
	}
	var vo VerifyOptions
	if a.ok {
		vo = VerifyOptions{Key: a.key, MACFrom: a.mark.MACFrom, Through: &a.mark.Head}
	}
	w, err := walk(io.NewSectionReader(f, 0, fi.Size()), vo)
	if err != nil {
		var ce *ChainError
		switch {
		case errors.Is(err, ErrTorn) && errors.As(err, &ce):
			return nil, fmt.Errorf("%w; the file is left as it is: move it aside, or cut it at byte %d after checking that line, and restart", err, ce.Offset)
		case errors.Is(err, ErrTampered) && opts.Anchor != nil:
			return nil, fmt.Errorf("%w; nothing was changed: keep the file as evidence, restore it from a backup, or move it aside and start once with re-anchoring (coffer-server --audit-reanchor) to begin a new trail", err)
		}
		return nil, err
	}
	head := w.head
	if fi.Size() == 0 {
		// A new file: make its directory entry durable too.
		if err := syncDir(filepath.Dir(path)); err != nil {
			return nil, err
		}
	}
	l := &Log{
		path:    path,
		f:       f,
		log:     opts.Logger,
		now:     opts.Now,
		max:     opts.MaxBatch,
		write:   f.Write,
		sync:    f.Sync,
		anchor:  opts.Anchor,
		server:  opts.Server,
		linger:  opts.Linger,
		key:     a.key,
		macFrom: a.mark.MACFrom,
		head:    head,
		size:    fi.Size(),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.max <= 0 {
		l.max = DefaultMaxBatch
	}
	var reanchored *Event
	if opts.Anchor != nil {
		if reanchored, err = l.anchorAtOpen(w, a, opts.Reanchor); err != nil {
			return nil, err
		}
	}
	if l.anchor != nil {
		l.anchorWake = make(chan struct{}, 1)
		go l.anchorer()
	}
	go l.commit()
	if reanchored != nil {
		if _, err := l.Append(context.Background(), *reanchored); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// anchorAtOpen compares the walked file with what the Anchor held, and
// saves a new Mark when they differ in a way that is allowed. It returns the
// record to append when it accepted a loss.
func (l *Log) anchorAtOpen(w walked, a loaded, reanchor bool) (*Event, error) {
	ctx := context.Background()
	head := w.head
	switch {
	case !a.ok:
		if w.firstMAC != 0 {
			return nil, fmt.Errorf("%w: records from seq %d on carry MACs, but the store holds no audit key: the store's audit key and head were removed, or the file belongs to another data dir; nothing was changed",
				ErrTampered, w.firstMAC)
		}
		key := make([]byte, KeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("generate audit key: %w", err)
		}
		l.key, l.macFrom = key, head.Seq+1
		if err := l.anchor.Save(ctx, key, sealMark(key, head, l.macFrom)); err != nil {
			return nil, fmt.Errorf("anchor the head: %w", err)
		}
		if head.Seq > 0 {
			l.log.Warn("audit trail predates MACs: its head is now anchored in the store, and records from here on carry MACs (the older ones cannot be authenticated, only chained); if this data dir had been started with MACs before, its audit key and head were removed from the store",
				"path", l.path, "head_seq", head.Seq, "mac_from", l.macFrom)
		} else {
			l.log.Info("created the audit trail's MAC key", "path", l.path)
		}
		return nil, nil
	case head.Seq < a.mark.Seq && !reanchor:
		return nil, fmt.Errorf("%w: the file ends at seq %d (hash %s), but the store anchors seq %d hash %s, saved at the last commit: records were cut from its end while the server was stopped, or it was replaced by an older copy; nothing was changed: restore the file from a backup (coffer audit verify --file COPY --head %s checks a copy), or, after an investigation, start once with re-anchoring (coffer-server --audit-reanchor) to carry on with what is left",
			ErrBehind, head.Seq, orNone(head.Hash), a.mark.Seq, a.mark.Hash, a.mark.Head)
	case head.Seq < a.mark.Seq:
		l.macFrom = min(a.mark.MACFrom, head.Seq+1)
		if err := l.anchor.Save(ctx, nil, sealMark(l.key, head, l.macFrom)); err != nil {
			return nil, fmt.Errorf("re-anchor the head: %w", err)
		}
		l.log.Error("audit trail re-anchored at a lost tail, as asked: records after the file's end are gone",
			"path", l.path, "anchored_seq", a.mark.Seq, "anchored_hash", a.mark.Hash, "found_seq", head.Seq, "found_hash", head.Hash)
		return &Event{Actor: "system", Action: "audit.reanchor", Result: ResultOK, Details: map[string]string{
			"anchored_seq": fmt.Sprint(a.mark.Seq), "anchored_hash": a.mark.Hash,
			"found_seq": fmt.Sprint(head.Seq), "found_hash": head.Hash,
		}}, nil
	case head.Seq > a.mark.Seq:
		// The last commit reached the file but not the Anchor: a crash
		// between the two writes. walk checked that the file holds the
		// anchored head and that the records after it carry good MACs.
		if err := l.anchor.Save(ctx, nil, sealMark(l.key, head, l.macFrom)); err != nil {
			return nil, fmt.Errorf("re-anchor the head: %w", err)
		}
		l.log.Info("audit trail re-anchored: the file was ahead of the anchored head (the last commit's head was not saved, as after a crash)",
			"path", l.path, "anchored_seq", a.mark.Seq, "head_seq", head.Seq)
	}
	if reanchor && head.Seq >= a.mark.Seq {
		l.log.Warn("audit re-anchoring is on but the trail does not end before its anchored head: nothing to accept; turn it off again", "path", l.path)
	}
	return nil, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// Append records e and returns it as recorded, with Seq, Time (now, if e's
// is zero; always UTC), Prev, Hash and, with an Anchor, MAC filled in. It
// returns only once the record is durable and, with an Anchor, its head is
// saved there. Actor, Action and Result are required. If ctx ends first,
// Append returns ctx's error and the record may or may not be written.
// After Close it returns ErrClosed; after a failed write, fsync or Anchor
// save, an error wrapping ErrFailed.
func (l *Log) Append(ctx context.Context, e Event) (Event, error) {
	e, err := prepare(e, l.now)
	if err != nil {
		return Event{}, err
	}
	e.Server = l.server
	p := &pending{e: e, out: make(chan struct{}), urgent: true}
	if err := l.enqueue(p); err != nil {
		return Event{}, err
	}
	select {
	case <-p.out:
		if p.err != nil {
			return Event{}, p.err
		}
		return p.e, nil
	case <-ctx.Done():
		return Event{}, errMayBeWritten(ctx)
	}
}

// enqueue hands prepared records to the committer, in order, unless the
// Log is closed or has failed.
func (l *Log) enqueue(ps ...*pending) error {
	l.mu.Lock()
	switch {
	case l.closed:
		l.mu.Unlock()
		return ErrClosed
	case l.failed != nil:
		err := fmt.Errorf("%w: %w", ErrFailed, l.failed)
		l.mu.Unlock()
		return err
	}
	if len(l.queue) == 0 {
		l.since = time.Now()
	}
	for _, p := range ps {
		if p.urgent {
			l.urgent++
		}
	}
	l.queue = append(l.queue, ps...)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return nil
}

// errMayBeWritten is the error of an append whose ctx ended first.
func errMayBeWritten(ctx context.Context) error {
	return fmt.Errorf("audit: record may or may not be written: %w", context.Cause(ctx))
}

// commit runs until Close, writing queued records in groups.
func (l *Log) commit() {
	// The committer's own sealer: flush runs on this goroutine only. The
	// key stays as open set it until the committer has stopped (Close
	// clears it after done).
	s := &sealer{key: l.key}
	defer func() {
		s.drop()
		if l.anchor == nil {
			close(l.done)
		} else {
			close(l.anchorWake) // the anchorer drains what is left, then closes done
		}
	}()
	var linger *time.Timer
	for {
		<-l.wake
		for {
			l.mu.Lock()
			if d := l.lingerLocked(); d > 0 {
				l.mu.Unlock()
				if linger == nil {
					linger = time.NewTimer(d)
				} else {
					linger.Reset(d)
				}
				select {
				case <-l.wake: // an Append, a Close, or more records
				case <-linger.C:
				}
				linger.Stop()
				continue
			}
			n := min(len(l.queue), l.max)
			batch := l.queue[:n:n]
			for _, p := range batch {
				if p.urgent {
					l.urgent--
				}
			}
			l.queue = l.queue[n:]
			if len(l.queue) == 0 {
				l.queue = nil
			}
			closed, head, failed := l.closed, l.head, l.failed
			l.mu.Unlock()
			if n == 0 {
				if closed {
					return
				}
				break
			}
			if failed != nil {
				release(batch, fmt.Errorf("%w: %w", ErrFailed, failed))
				continue
			}
			l.flush(s, batch, head)
		}
	}
}

// lingerLocked is how much longer the committer waits before it commits
// the queue: while it holds only AppendAll's records, younger than
// l.linger, and the Log is open. Called with l.mu held.
func (l *Log) lingerLocked() time.Duration {
	if l.linger <= 0 || len(l.queue) == 0 || l.urgent > 0 || l.closed {
		return 0
	}
	return time.Until(l.since.Add(l.linger))
}

// maxKeptBuffer is the most capacity of a flush's buffer that the
// committer keeps for the next flush.
const maxKeptBuffer = 4 << 20

// flush seals the batch after head with s, writes it in one write, fsyncs
// it and releases its callers, or, with an Anchor, hands it to the
// anchorer. Only the committer calls it.
func (l *Log) flush(s *sealer, batch []*pending, head Head) {
	buf := s.out[:0]
	// The records sealed, filtered in place: batch is the committer's
	// own (commit cut it from the queue with its capacity capped).
	ok := batch[:0]
	for _, p := range batch {
		var err error
		buf, err = s.seal(buf, &p.e, head)
		if err != nil { // not chained: the record is refused alone
			p.e = Event{}
			p.err = err
			close(p.out)
			continue
		}
		head = Head{Seq: p.e.Seq, Hash: p.e.Hash}
		ok = append(ok, p)
	}
	if cap(buf) <= maxKeptBuffer {
		s.out = buf[:0] // l.write is done with it when it returns
	}
	if len(ok) == 0 {
		return
	}
	_, err := l.write(buf)
	if err == nil {
		err = l.sync()
	}
	l.mu.Lock()
	if err != nil {
		l.failed = err
	} else {
		l.head = head
		l.size += int64(len(buf))
		if l.anchor != nil {
			l.anchoring = append(l.anchoring, group{ps: ok, head: head})
		}
	}
	l.mu.Unlock()
	switch {
	case err != nil:
		l.log.Error("audit trail write failed; refusing further records", "path", l.path, "records", len(ok), "err", err)
		release(ok, fmt.Errorf("%w: %w", ErrFailed, err))
	case l.anchor != nil:
		select {
		case l.anchorWake <- struct{}{}:
		default:
		}
	default:
		release(ok, nil)
	}
}

// anchorer saves the Mark of the groups the committer has written, and
// then releases their callers, until the committer stops. It runs while the
// committer writes the next group, and saves one Mark, the latest, for all
// the groups written meanwhile: at most one Anchor write per group commit,
// always after the group's fsync, so the Anchor is never ahead of the file.
// If a Save fails, its groups' appends fail, and so does every later one.
func (l *Log) anchorer() {
	// The anchorer's own sealer, for the Marks: its HMAC is reused from
	// one Mark to the next, on this goroutine only.
	s := &sealer{key: l.key}
	defer func() {
		s.drop()
		close(l.done)
	}()
	var failed error
	for {
		_, open := <-l.anchorWake
		for {
			l.mu.Lock()
			gs := l.anchoring
			l.anchoring = nil
			l.mu.Unlock()
			if len(gs) == 0 {
				break
			}
			if failed == nil {
				m := s.sealMark(gs[len(gs)-1].head, l.macFrom)
				if err := l.anchor.Save(context.Background(), nil, m); err != nil {
					failed = fmt.Errorf("anchor the head: %w", err)
					l.mu.Lock()
					if l.failed == nil {
						l.failed = failed
					}
					l.mu.Unlock()
					l.log.Error("audit trail head could not be saved; refusing further records", "path", l.path, "err", err)
				}
			}
			for _, g := range gs {
				if failed != nil {
					release(g.ps, fmt.Errorf("%w: %w", ErrFailed, failed))
				} else {
					release(g.ps, nil)
				}
			}
		}
		if !open {
			return
		}
	}
}

func release(ps []*pending, err error) {
	for _, p := range ps {
		if err != nil {
			p.e = Event{}
			p.err = err
		}
		close(p.out)
	}
}

// Head returns the last durable record's seq and hash.
func (l *Log) Head() Head {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head
}

// Close waits for queued appends to finish, then closes the file. Appends
// after Close fail with ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	<-l.done
	l.mu.Lock()
	clear(l.key)
	l.mu.Unlock()
	return l.f.Close() // also releases the lock
}

// durable returns a reader over the durable records and their head.
func (l *Log) durable() (*io.SectionReader, Head, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, Head{}, ErrClosed
	}
	return io.NewSectionReader(l.f, 0, l.size), l.head, nil
}

// Verify walks the chain of the durable records, as Verify does, checks
// their MACs if the Log has an Anchor, and checks that the chain ends at the
// Log's Head and, if through is not nil, that it contains *through (a head
// exported earlier).
func (l *Log) Verify(ctx context.Context, through *Head) (Head, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return Head{}, ErrClosed
	}
	r, head := io.NewSectionReader(l.f, 0, l.size), l.head
	key := append([]byte(nil), l.key...) // Close zeroes l.key
	l.mu.Unlock()
	defer clear(key)
	o := VerifyOptions{End: &head, Through: through}
	if l.anchor != nil {
		o.Key, o.MACFrom = key, l.macFrom
	}
	return VerifyWith(ctxReader{ctx, r}, o)
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
