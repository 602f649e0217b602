package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// DefaultMaxBatch is the most records committed by one write and fsync when
// Options.MaxBatch is zero.
const DefaultMaxBatch = 4096

// Options configure a Log. The zero Options are usable.
type Options struct {
	Logger   *slog.Logger     // nil: discard
	Now      func() time.Time // clock for events without a Time; nil: time.Now
	MaxBatch int              // most records per write+fsync; 0: DefaultMaxBatch
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

	mu     sync.Mutex
	queue  []*pending
	head   Head  // last durable record
	size   int64 // bytes of durable records
	closed bool
	failed error // first write or fsync error
	wake   chan struct{}
	done   chan struct{} // closed when the committer has stopped
}

type pending struct {
	e   Event
	err error
	out chan struct{}
}

// Open opens the trail at path, creating it (mode 0600) if it does not
// exist. An existing file is verified in full: a torn last line (ErrTorn)
// or a broken chain (ErrTampered) is refused with the line where it breaks,
// and the file is left exactly as it is. Open takes an exclusive lock on the
// file, so a second Log on the same file fails instead of forking the chain.
func Open(path string, opts Options) (*Log, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: open: %w", err)
	}
	l, err := open(path, f, opts)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: open %s: %w", path, err)
	}
	return l, nil
}

func open(path string, f *os.File, opts Options) (*Log, error) {
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
	head, err := Verify(io.NewSectionReader(f, 0, fi.Size()), nil)
	if err != nil {
		if errors.Is(err, ErrTorn) {
			var ce *ChainError
			errors.As(err, &ce)
			return nil, fmt.Errorf("%w; the file is left as it is: move it aside, or cut it at byte %d after checking that line, and restart", err, ce.Offset)
		}
		return nil, err
	}
	if fi.Size() == 0 {
		// A new file: make its directory entry durable too.
		if err := syncDir(filepath.Dir(path)); err != nil {
			return nil, err
		}
	}
	l := &Log{
		path:  path,
		f:     f,
		log:   opts.Logger,
		now:   opts.Now,
		max:   opts.MaxBatch,
		write: f.Write,
		sync:  f.Sync,
		head:  head,
		size:  fi.Size(),
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
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
	go l.commit()
	return l, nil
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
// is zero; always UTC), Prev and Hash filled in. It returns only once the
// record is durable. Actor, Action and Result are required. If ctx ends
// first, Append returns ctx's error and the record may or may not be
// written. After Close it returns ErrClosed; after a failed write or fsync,
// an error wrapping ErrFailed.
func (l *Log) Append(ctx context.Context, e Event) (Event, error) {
	e, err := prepare(e, l.now)
	if err != nil {
		return Event{}, err
	}
	p := &pending{e: e, out: make(chan struct{})}
	l.mu.Lock()
	switch {
	case l.closed:
		l.mu.Unlock()
		return Event{}, ErrClosed
	case l.failed != nil:
		l.mu.Unlock()
		return Event{}, fmt.Errorf("%w: %w", ErrFailed, l.failed)
	}
	l.queue = append(l.queue, p)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	select {
	case <-p.out:
		if p.err != nil {
			return Event{}, p.err
		}
		return p.e, nil
	case <-ctx.Done():
		return Event{}, fmt.Errorf("audit: record may or may not be written: %w", context.Cause(ctx))
	}
}

// commit runs until Close, writing queued records in groups.
func (l *Log) commit() {
	defer close(l.done)
	for {
		<-l.wake
		for {
			l.mu.Lock()
			n := min(len(l.queue), l.max)
			batch := l.queue[:n:n]
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
			l.flush(batch, head)
		}
	}
}

// flush seals the batch after head, writes it in one write, fsyncs it and
// releases its callers.
func (l *Log) flush(batch []*pending, head Head) {
	var buf []byte
	ok := batch[:0:0]
	for _, p := range batch {
		prev := head
		b, err := seal(&p.e, head)
		if err != nil { // not chained: the record is refused alone
			p.e = Event{}
			p.err = err
			close(p.out)
			head = prev
			continue
		}
		head = Head{Seq: p.e.Seq, Hash: p.e.Hash}
		buf = append(buf, b...)
		ok = append(ok, p)
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
	}
	l.mu.Unlock()
	if err != nil {
		l.log.Error("audit trail write failed; refusing further records", "path", l.path, "records", len(ok), "err", err)
		release(ok, fmt.Errorf("%w: %w", ErrFailed, err))
		return
	}
	release(ok, nil)
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

// Verify walks the chain of the durable records, as Verify does, and checks
// that it ends at the Log's Head.
func (l *Log) Verify(ctx context.Context) (Head, error) {
	r, head, err := l.durable()
	if err != nil {
		return Head{}, err
	}
	return Verify(ctxReader{ctx, r}, &head)
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
