package hook

import (
	"context"
	"errors"
	"io/fs"
	"sync"
	"syscall"
	"testing"
	"time"

	"coffer/internal/container"
	"coffer/internal/secret"
)

// recorder is a RootDeliverer that records where each Apply went.
type recorder struct {
	mu    sync.Mutex
	calls []string // "apply <id>" or "root <id> <root>"
	block chan struct{}
}

func (r *recorder) Apply(_ context.Context, c container.Info, _ []secret.File) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "apply "+c.ID)
	return nil
}

func (r *recorder) ApplyRoot(_ context.Context, c container.Info, root string, _ []secret.File) error {
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "root "+c.ID+" "+root)
	return nil
}

func (r *recorder) Release(context.Context, container.Info) error { return nil }

func (r *recorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) == 0 {
		return ""
	}
	return r.calls[len(r.calls)-1]
}

// While a hook holds a container, its deliveries go below its root; others
// pass through; once the hook answers, a delivery waits until the process
// has entered its root and then goes to the target directory (without the
// wait it would land before pivot_root, outside the container's view).
func TestGate(t *testing.T) {
	rec := &recorder{}
	g := NewGate(rec, nil)
	var mu sync.Mutex
	root := fileID{1, 2} // the process's root: pre-pivot until changed
	g.rootID = func(int) (fileID, error) { mu.Lock(); defer mu.Unlock(); return root, nil }
	ctx := context.Background()
	c := container.Info{ID: "c1", PID: 100}

	if err := g.enter("c1", 100, "/bundle/rootfs", fileID{1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := g.enter("c1", 100, "/bundle/rootfs", fileID{1, 2}); !errors.Is(err, ErrBusy) {
		t.Errorf("a second hold of one container: %v", err)
	}
	_ = g.Apply(ctx, c, nil)
	if got := rec.last(); got != "root c1 /bundle/rootfs" {
		t.Errorf("held: %q", got)
	}
	_ = g.Apply(ctx, container.Info{ID: "c2", PID: 200}, nil)
	if got := rec.last(); got != "apply c2" {
		t.Errorf("another container: %q", got)
	}
	_ = g.Apply(ctx, container.Info{ID: "c1", PID: 101}, nil)
	if got := rec.last(); got != "apply c1" {
		t.Errorf("another pid: %q", got)
	}
	g.leave("c1")

	done := make(chan error, 1)
	go func() { done <- g.Apply(ctx, c, nil) }()
	select {
	case err := <-done:
		t.Fatalf("applied before the process entered its root: %v, %q", err, rec.last())
	case <-time.After(50 * time.Millisecond):
	}
	mu.Lock()
	root = fileID{3, 4} // pivot_root
	mu.Unlock()
	if err := <-done; err != nil || rec.last() != "apply c1" {
		t.Errorf("after the pivot: %v, %q", err, rec.last())
	}

	// A process that never pivots: a bounded wait, then an error.
	g.PivotWait = 30 * time.Millisecond
	_ = g.enter("c3", 300, "/r", fileID{3, 4})
	g.leave("c3")
	if err := g.Apply(ctx, container.Info{ID: "c3", PID: 300}, nil); err == nil {
		t.Error("no error for a process that never entered its root")
	}

	// Its root unreadable: no delivery on a guess; gone: the Deliverer says so.
	for _, c := range []struct {
		err  error
		want bool // Apply reaches the Deliverer
	}{{syscall.EACCES, false}, {fs.ErrNotExist, true}, {syscall.ESRCH, true}} {
		g.rootID = func(int) (fileID, error) { return fileID{}, c.err }
		_ = g.enter("c4", 400, "/r", fileID{3, 4})
		g.leave("c4")
		n := len(rec.calls)
		err := g.Apply(ctx, container.Info{ID: "c4", PID: 400}, nil)
		if reached := len(rec.calls) > n; reached != c.want || (err == nil) != c.want {
			t.Errorf("root unreadable with %v: reached %v, err %v", c.err, reached, err)
		}
	}
}

// leave waits for a delivery below the root still running: the hook's
// answer (and so the pivot) must not overtake it.
func TestGateLeaveWaitsForInflight(t *testing.T) {
	rec := &recorder{block: make(chan struct{})}
	g := NewGate(rec, nil)
	_ = g.enter("c1", 100, "/r", fileID{1, 2})
	applied := make(chan struct{})
	go func() { _ = g.Apply(context.Background(), container.Info{ID: "c1", PID: 100}, nil); close(applied) }()
	for {
		g.mu.Lock()
		n := g.holds["c1"].inflight
		g.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	left := make(chan struct{})
	go func() { g.leave("c1"); close(left) }()
	select {
	case <-left:
		t.Fatal("leave returned while a delivery below the root ran")
	case <-time.After(50 * time.Millisecond):
	}
	close(rec.block)
	<-applied
	<-left
}
