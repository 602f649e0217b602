package audit

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// AppendAll writes its records in order, each chained and verifiable,
// sharing group commits; an invalid record gets its own error and the
// others are written; records of concurrent Appends may come between them
// but never reorder them.
func TestAppendAll(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	var writes int
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	write := l.write
	l.write = func(b []byte) (int, error) { writes++; return write(b) }

	es := make([]Event, 200)
	for i := range es {
		es[i] = ev(i)
		es[i].Details = map[string]string{"n": fmt.Sprint(i)}
	}
	es[7].Actor = "" // invalid
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if _, err := l.Append(context.Background(), ev(1000+i)); err != nil {
				t.Error(err)
			}
		})
	}
	errs := l.AppendAll(context.Background(), es)
	wg.Wait()
	for i, err := range errs {
		if i == 7 {
			if !errors.Is(err, ErrInvalidEvent) {
				t.Errorf("the invalid record: %v, want ErrInvalidEvent", err)
			}
		} else if err != nil {
			t.Errorf("record %d: %v", i, err)
		}
	}
	head := l.Head()
	if _, err := verifyFile(t, path, &head); err != nil || head.Seq != 219 {
		t.Fatalf("Verify: %v, head %+v, want 219 records", err, head)
	}
	if writes > 40 {
		t.Errorf("%d writes for 219 records: AppendAll did not share group commits", writes)
	}
	got, err := l.Query(context.Background(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	next := 0
	for _, e := range got {
		if n, ok := e.Details["n"]; ok {
			if next == 7 {
				next++
			}
			if n != fmt.Sprint(next) {
				t.Fatalf("record %s where %d was due: AppendAll reordered its records", n, next)
			}
			next++
		}
	}
	if next != 200 {
		t.Fatalf("%d of AppendAll's records found", next)
	}

	l.Close()
	for _, err := range l.AppendAll(context.Background(), es[:3]) {
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("after Close: %v, want ErrClosed", err)
		}
	}
}

// With a Linger, AppendAll's records wait for more before their group
// commit: several calls within it share one write; an Append (a caller
// that must not wait) commits at once and takes them along, as Close does.
func TestAppendAllLinger(t *testing.T) {
	open := func(t *testing.T, linger time.Duration) (*Log, *atomic.Int64) {
		l, err := Open(filepath.Join(t.TempDir(), "audit.log"), Options{Linger: linger})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		var writes atomic.Int64
		write := l.write
		l.write = func(b []byte) (int, error) { writes.Add(1); return write(b) }
		return l, &writes
	}
	batch := func(from int) []Event {
		es := make([]Event, 5)
		for i := range es {
			es[i] = ev(from + i)
		}
		return es
	}
	appendAll := func(t *testing.T, l *Log, es []Event) {
		for i, err := range l.AppendAll(context.Background(), es) {
			if err != nil {
				t.Errorf("record %d: %v", i, err)
			}
		}
	}

	t.Run("calls within the linger share a commit", func(t *testing.T) {
		const linger = 300 * time.Millisecond
		l, writes := open(t, linger)
		start := time.Now()
		var wg sync.WaitGroup
		for i := range 3 {
			wg.Go(func() { appendAll(t, l, batch(10*i)) })
			time.Sleep(20 * time.Millisecond)
		}
		wg.Wait()
		if took := time.Since(start); took < linger*3/4 {
			t.Errorf("AppendAll returned after %v, before its linger of %v", took, linger)
		}
		if n := writes.Load(); n != 1 || l.Head().Seq != 15 {
			t.Errorf("%d writes for %d records, want 1 for 15", n, l.Head().Seq)
		}
	})

	t.Run("an Append commits at once, lingering records with it", func(t *testing.T) {
		l, writes := open(t, time.Hour)
		done := make(chan struct{})
		go func() { defer close(done); appendAll(t, l, batch(0)) }()
		waitQueued(t, l, 5)
		if _, err := l.Append(context.Background(), ev(100)); err != nil {
			t.Fatal(err)
		}
		<-done
		if n := writes.Load(); n != 1 || l.Head().Seq != 6 {
			t.Errorf("%d writes for %d records, want 1 for 6", n, l.Head().Seq)
		}
	})

	t.Run("Close commits lingering records", func(t *testing.T) {
		l, _ := open(t, time.Hour)
		path := l.path
		done := make(chan struct{})
		go func() { defer close(done); appendAll(t, l, batch(0)) }()
		waitQueued(t, l, 5)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		<-done
		if head, err := verifyFile(t, path, nil); err != nil || head.Seq != 5 {
			t.Fatalf("after Close: head %+v, %v; want 5 records", head, err)
		}
	})
}

// waitQueued waits until l's queue holds n records.
func waitQueued(t *testing.T, l *Log, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		l.mu.Lock()
		q := len(l.queue)
		l.mu.Unlock()
		if q >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d records queued, want %d", q, n)
		}
	}
}
