package audit

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
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
