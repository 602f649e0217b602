package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func openTemp(t testing.TB) (*Log, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

func ev(i int) Event {
	return Event{
		Actor:   fmt.Sprintf("token:t%d", i%3),
		Action:  []string{"secret.put", "binding.create", "delivery.apply"}[i%3],
		Object:  fmt.Sprintf("secret:payments/db-%d", i%4),
		Result:  ResultOK,
		Source:  "127.0.0.1:5555",
		Details: map[string]string{"version": fmt.Sprint(i), "container": "web-1"},
	}
}

func verifyFile(t testing.TB, path string, want *Head) (Head, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Verify(f, want)
}

func TestAppendAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	fixed := time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.FixedZone("x", 3600))
	l, err := Open(path, Options{Now: func() time.Time { return fixed }})
	if err != nil {
		t.Fatal(err)
	}
	if h := l.Head(); h != (Head{}) {
		t.Fatalf("new log head = %+v", h)
	}
	ctx := context.Background()
	details := map[string]string{"version": "3"}
	e1, err := l.Append(ctx, Event{Actor: "system", Action: "server.start", Result: ResultOK, Details: details})
	if err != nil {
		t.Fatal(err)
	}
	details["version"] = "changed after append"
	if e1.Seq != 1 || e1.Prev != "" || len(e1.Hash) != 64 || !e1.Time.Equal(fixed) || e1.Time.Location() != time.UTC {
		t.Fatalf("first event %+v", e1)
	}
	given := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	e2, err := l.Append(ctx, Event{Actor: "token:abc", Action: "secret.put", Object: "secret:a/b", Result: ResultDenied, Time: given, Seq: 99, Prev: "forged", Hash: "forged"})
	if err != nil {
		t.Fatal(err)
	}
	if e2.Seq != 2 || e2.Prev != e1.Hash || !e2.Time.Equal(given) {
		t.Fatalf("second event %+v", e2)
	}
	if h := l.Head(); h != (Head{2, e2.Hash}) {
		t.Fatalf("head %+v", h)
	}
	if h, err := l.Verify(ctx, nil); err != nil || h.Seq != 2 {
		t.Fatalf("Log.Verify = %+v, %v", h, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, ev(0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if err := l.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.Query(ctx, Filter{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Query after Close: %v", err)
	}

	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, %v", fi.Mode(), err)
	}
	data, _ := os.ReadFile(path)
	if lines := strings.Count(string(data), "\n"); lines != 2 {
		t.Fatalf("%d lines:\n%s", lines, data)
	}
	if !strings.Contains(string(data), `"details":{"version":"3"}`) {
		t.Fatalf("details not copied at append:\n%s", data)
	}

	l2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if h := l2.Head(); h != (Head{2, e2.Hash}) {
		t.Fatalf("reopened head %+v", h)
	}
	e3, err := l2.Append(ctx, ev(3))
	if err != nil || e3.Seq != 3 || e3.Prev != e2.Hash {
		t.Fatalf("append after reopen: %+v, %v", e3, err)
	}
	want := l2.Head()
	if h, err := verifyFile(t, path, &want); err != nil || h != want {
		t.Fatalf("Verify = %+v, %v", h, err)
	}
}

func TestAppendInvalid(t *testing.T) {
	l, _ := openTemp(t)
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		e    Event
		msg  string
	}{
		{"no actor", Event{Action: "a", Result: "ok"}, "no actor"},
		{"no action", Event{Actor: "a", Result: "ok"}, "no action"},
		{"no result", Event{Actor: "a", Action: "a"}, "no result"},
		{"year 10000", Event{Actor: "a", Action: "a", Result: "ok", Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, "out of range"},
		{"huge", Event{Actor: "a", Action: "a", Result: "ok", Details: map[string]string{"x": strings.Repeat("y", MaxRecordSize)}}, "larger than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := l.Append(ctx, tt.e)
			if !errors.Is(err, ErrInvalidEvent) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want ErrInvalidEvent saying %q", err, tt.msg)
			}
		})
	}
	// Refused events leave no gap in the chain.
	e, err := l.Append(ctx, ev(1))
	if err != nil || e.Seq != 1 {
		t.Fatalf("after refusals: %+v, %v", e, err)
	}
	if _, err := l.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

func TestAppendOddText(t *testing.T) {
	l, path := openTemp(t)
	ctx := context.Background()
	odd := []string{"bad\xffutf8", "<html>&amp;", "line\nbreak\t\"quoted\"", "\u2028\u2029", "😀", "\x00"}
	for i, s := range odd {
		if _, err := l.Append(ctx, Event{Actor: s, Action: "x." + s, Object: s, Result: "ok", Source: s, Details: map[string]string{s: s, "k": s}}); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
	}
	want := l.Head()
	if _, err := verifyFile(t, path, &want); err != nil {
		t.Fatal(err)
	}
	got, err := l.Query(ctx, Filter{Actor: "bad\uFFFDutf8"})
	if err != nil || len(got) != 1 {
		t.Fatalf("query invalid utf-8 actor: %v, %v", got, err)
	}
}

func TestConcurrentAppends(t *testing.T) {
	l, path := openTemp(t)
	ctx := context.Background()
	const workers, each = 50, 100
	var wg sync.WaitGroup
	seqs := make([][]uint64, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				e, err := l.Append(ctx, ev(w*each+i))
				if err != nil {
					t.Error(err)
					return
				}
				seqs[w] = append(seqs[w], e.Seq)
			}
		})
	}
	wg.Wait()
	seen := make(map[uint64]bool)
	for w, ss := range seqs {
		for i := 1; i < len(ss); i++ {
			if ss[i] <= ss[i-1] {
				t.Fatalf("worker %d: seq %d after %d", w, ss[i], ss[i-1])
			}
		}
		for _, s := range ss {
			if seen[s] {
				t.Fatalf("seq %d twice", s)
			}
			seen[s] = true
		}
	}
	want := l.Head()
	if want.Seq != workers*each {
		t.Fatalf("head %+v", want)
	}
	if h, err := verifyFile(t, path, &want); err != nil || h != want {
		t.Fatalf("Verify = %+v, %v", h, err)
	}
	if h, err := l.Verify(ctx, nil); err != nil || h != want {
		t.Fatalf("Log.Verify = %+v, %v", h, err)
	}
}

// TestConcurrentAppendsWithReaders runs appends, queries, verifies and Head
// together, then Close while appends are in flight.
func TestConcurrentAppendsWithReaders(t *testing.T) {
	l, path := openTemp(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := l.Append(ctx, ev(w+i)); err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Error(err)
					}
					return
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for range 20 {
				h := l.Head()
				evs, err := l.Query(ctx, Filter{})
				if errors.Is(err, ErrClosed) || errors.Is(err, os.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				if uint64(len(evs)) < h.Seq {
					t.Errorf("query saw %d records, head was %d", len(evs), h.Seq)
				}
				if _, err := l.Verify(ctx, nil); err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, os.ErrClosed) {
					t.Error(err)
					return
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	// Every record that Append reported is on disk, and the chain is whole.
	want := l.Head()
	if h, err := verifyFile(t, path, &want); err != nil || h != want || h.Seq == 0 {
		t.Fatalf("Verify after close = %+v, %v (want %+v)", h, err, want)
	}
}

func TestOpenSecondLogOnSameFile(t *testing.T) {
	l, path := openTemp(t)
	if _, err := l.Append(context.Background(), ev(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second Open: %v", err)
	}
}

func TestOpenRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.log")
	l, err := Open(good, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := l.Append(context.Background(), ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	data, _ := os.ReadFile(good)
	lines := strings.SplitAfter(string(data), "\n")
	lines = lines[:len(lines)-1]

	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	torn := lines[4][:40]
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		is      error
		msg     string
	}{
		{"torn last line", strings.Join(lines[:4], "") + torn, 0o600, ErrTorn,
			fmt.Sprintf("audit trail has a torn last record: line 5: 40 bytes without a final newline (a write that never completed); the file is left as it is: move it aside, or cut it at byte %d", len(strings.Join(lines[:4], "")))},
		{"torn only line", torn, 0o600, ErrTorn, "line 1: 40 bytes without a final newline"},
		{"broken chain", lines[0] + lines[2], 0o600, ErrTampered, "audit trail tampered: line 2 (seq 3): seq 3 follows seq 1: records removed or reordered"},
		{"garbage", "hello\n", 0o600, ErrTampered, "line 1: not a record"},
		{"world-readable", strings.Join(lines, ""), 0o644, nil, "mode 0644: others may read the trail; want 0600"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := write(strings.ReplaceAll(tt.name, " ", "-"), tt.content, tt.mode)
			_, err := Open(p, Options{})
			if err == nil {
				t.Fatal("Open accepted the file")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q\ndoes not say %q", err, tt.msg)
			}
			after, _ := os.ReadFile(p)
			if string(after) != tt.content {
				t.Error("Open changed the file")
			}
		})
	}
}

func TestWriteFailureFailsAppends(t *testing.T) {
	for _, which := range []string{"write", "fsync"} {
		t.Run(which, func(t *testing.T) {
			l, path := openTemp(t)
			ctx := context.Background()
			if _, err := l.Append(ctx, ev(1)); err != nil {
				t.Fatal(err)
			}
			boom := errors.New("disk on fire")
			if which == "write" {
				l.write = func([]byte) (int, error) { return 0, boom }
			} else {
				l.sync = func() error { return boom }
			}
			var wg sync.WaitGroup
			for i := range 10 {
				wg.Go(func() {
					if _, err := l.Append(ctx, ev(i)); !errors.Is(err, ErrFailed) || !errors.Is(err, boom) {
						t.Errorf("Append = %v, want ErrFailed and the cause", err)
					}
				})
			}
			wg.Wait()
			if _, err := l.Append(ctx, ev(2)); !errors.Is(err, ErrFailed) {
				t.Fatalf("later Append = %v", err)
			}
			if h := l.Head(); h.Seq != 1 {
				t.Fatalf("head moved to %+v", h)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if which == "write" { // nothing reached the file: it still verifies and reopens
				l2, err := Open(path, Options{})
				if err != nil {
					t.Fatal(err)
				}
				l2.Close()
			}
		})
	}
}

func TestAppendContextCanceled(t *testing.T) {
	l, _ := openTemp(t)
	block := make(chan struct{})
	l.sync = func() error { <-block; return nil }
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		_, err := l.Append(ctx, ev(1))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Append = %v", err)
	}
	close(block)
}

func TestQuery(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l, _ := openTemp(t)
	ctx := context.Background()
	add := func(actor, action, object string, details map[string]string, minute int) {
		t.Helper()
		if _, err := l.Append(ctx, Event{Actor: actor, Action: action, Object: object, Result: "ok", Details: details, Time: base.Add(time.Duration(minute) * time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	add("token:a", "secret.put", "secret:payments/db", nil, 0)                                        // 1
	add("token:b", "secret.put", "secret:payments/api", nil, 1)                                       // 2
	add("agent:n1", "delivery.apply", "container:c1", map[string]string{"secret": "payments/db"}, 2)  // 3
	add("token:a", "binding.create", "binding:web-db", map[string]string{"secret": "payments/db"}, 3) // 4
	add("agent:n1", "delivery.apply", "container:c2", map[string]string{"secret": "payments/api"}, 4) // 5
	add("token:a", "secret.delete", "secret:payments/db-old", nil, 5)                                 // 6
	add("system", "server.start", "", nil, 6)                                                         // 7
	add("agent:n2", "delivery.remove", "container:c1", map[string]string{"secret": "payments/db"}, 7) // 8
	tests := []struct {
		name string
		f    Filter
		want []uint64
	}{
		{"all", Filter{}, []uint64{1, 2, 3, 4, 5, 6, 7, 8}},
		{"actor", Filter{Actor: "token:a"}, []uint64{1, 4, 6}},
		{"action", Filter{Action: "delivery.apply"}, []uint64{3, 5}},
		{"object exact", Filter{Object: "secret:payments/db"}, []uint64{1}},
		{"object prefix", Filter{Object: "secret:payments/*"}, []uint64{1, 2, 6}},
		{"object prefix all", Filter{Object: "*"}, []uint64{1, 2, 3, 4, 5, 6, 7, 8}},
		{"secret", Filter{Secret: "payments/db"}, []uint64{1, 3, 4, 8}},
		{"since", Filter{Since: base.Add(6 * time.Minute)}, []uint64{7, 8}},
		{"until", Filter{Until: base.Add(2 * time.Minute)}, []uint64{1, 2}},
		{"window", Filter{Since: base.Add(2 * time.Minute), Until: base.Add(4 * time.Minute)}, []uint64{3, 4}},
		{"limit", Filter{Limit: 3}, []uint64{6, 7, 8}},
		{"limit larger", Filter{Limit: 30}, []uint64{1, 2, 3, 4, 5, 6, 7, 8}},
		{"secret limit", Filter{Secret: "payments/db", Limit: 2}, []uint64{4, 8}},
		{"combined", Filter{Actor: "agent:n1", Secret: "payments/api"}, []uint64{5}},
		{"none", Filter{Actor: "nobody"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := l.Query(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, e := range evs {
				got = append(got, e.Seq)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	if _, err := l.Query(ctx, Filter{Limit: -1}); err == nil {
		t.Error("negative limit accepted")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	for i := range 2000 {
		add("x", "y", "", nil, i)
	}
	if _, err := l.Query(cctx, Filter{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Query with canceled ctx: %v", err)
	}
	evs, _ := l.Query(ctx, Filter{Actor: "token:b"})
	if len(evs) != 1 || evs[0].Hash == "" || evs[0].Prev == "" || !evs[0].Time.Equal(base.Add(time.Minute)) {
		t.Errorf("queried event %+v", evs)
	}
}

func TestNoValueFieldsInRecord(t *testing.T) {
	// The record format has no place for a value: only the fields below.
	l, path := openTemp(t)
	if _, err := l.Append(context.Background(), ev(1)); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	for _, k := range []string{`"seq"`, `"time"`, `"actor"`, `"action"`, `"object"`, `"result"`, `"source"`, `"details"`, `"prev"`, `"hash"`} {
		if !bytes.Contains(data, []byte(k)) {
			t.Errorf("record lacks %s: %s", k, data)
		}
	}
}

func TestSmallBatches(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	var writes int
	l, err := Open(path, Options{MaxBatch: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	write := l.write
	l.write = func(b []byte) (int, error) {
		if n := bytes.Count(b, []byte("\n")); n > 3 {
			t.Errorf("a write of %d records", n)
		}
		writes++
		return write(b)
	}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			if _, err := l.Append(context.Background(), ev(i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	want := l.Head()
	if _, err := verifyFile(t, path, &want); err != nil || want.Seq != 40 {
		t.Fatalf("Verify: %v, head %+v", err, want)
	}
	if writes < 14 {
		t.Errorf("%d writes for 40 records in batches of at most 3", writes)
	}
}
