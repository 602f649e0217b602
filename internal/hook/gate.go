package hook

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"coffer/internal/container"
	"coffer/internal/deliver"
	"coffer/internal/secret"
)

// RootDeliverer is a Deliverer that can also write into a container that
// has not entered its root yet (*tmpfs.Deliverer).
type RootDeliverer interface {
	deliver.Deliverer
	ApplyRoot(ctx context.Context, c container.Info, root string, want []secret.File) error
}

// Gate is the agent's Deliverer when the hook is on. While a hook holds a
// container before pivot_root, every delivery to that container (the one
// StartNow makes, and any other the agent's workers make meanwhile) goes
// below the container's root, where its tmpfs will appear at the target
// directory. Once the hook has answered, a delivery waits (bounded) until
// the process has entered its root, so nothing is written where the
// container will not see it. Other containers pass straight through.
type Gate struct {
	d   RootDeliverer
	log *slog.Logger
	// PivotWait bounds the wait for a released container to enter its
	// root (default 2s; runc does it within milliseconds).
	PivotWait time.Duration
	// rootID reads the identity of a process's root (a seam for tests).
	rootID func(pid int) (fileID, error)

	mu    sync.Mutex
	holds map[string]*hold
}

var _ deliver.Deliverer = (*Gate)(nil)

// fileID identifies a directory: device and inode.
type fileID struct{ dev, ino uint64 }

// hold is one container a hook holds, or held.
type hold struct {
	pid      int
	root     string // the container's root in its mount namespace
	preRoot  fileID // the process's root while held (before pivot_root)
	active   bool   // the hook has not answered yet
	inflight int    // ApplyRoot calls running
	idle     chan struct{}
	since    time.Time
}

// maxHolds bounds the containers held or recently released.
const maxHolds = 4096

// ErrBusy: a hook for the container is already being served.
var ErrBusy = errors.New("a hook for this container is already being served")

// NewGate wraps d.
func NewGate(d RootDeliverer, log *slog.Logger) *Gate {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Gate{d: d, log: log.With("component", "hook"), PivotWait: 2 * time.Second, rootID: procRootID, holds: map[string]*hold{}}
}

// enter starts holding container id, process pid, whose root is root and
// whose current root (before pivot_root) is pre.
func (g *Gate) enter(id string, pid int, root string, pre fileID) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sweepLocked()
	if h := g.holds[id]; h != nil && h.active {
		return ErrBusy
	}
	if len(g.holds) >= maxHolds {
		return fmt.Errorf("%d containers held by hooks at once", len(g.holds))
	}
	g.holds[id] = &hold{pid: pid, root: root, preRoot: pre, active: true, since: time.Now()}
	return nil
}

// leave ends the hold of container id: deliveries from now on wait for
// the process to enter its root. It waits (bounded) for the deliveries
// below the root that are still running, which the hook's answer must
// not overtake.
func (g *Gate) leave(id string) {
	g.mu.Lock()
	h := g.holds[id]
	if h == nil || !h.active {
		g.mu.Unlock()
		return
	}
	h.active = false
	h.since = time.Now()
	if h.inflight == 0 {
		g.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	h.idle = ch
	g.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		g.log.Warn("a delivery below a held container's root is still running as its hook answers", "id", id)
	}
}

// sweepLocked drops released holds older than a minute.
func (g *Gate) sweepLocked() {
	for id, h := range g.holds {
		if !h.active && time.Since(h.since) > time.Minute {
			delete(g.holds, id)
		}
	}
}

// Apply implements deliver.Deliverer.
func (g *Gate) Apply(ctx context.Context, c container.Info, want []secret.File) error {
	g.mu.Lock()
	h := g.holds[c.ID]
	if h == nil || h.pid != c.PID {
		g.mu.Unlock()
		return g.d.Apply(ctx, c, want)
	}
	if h.active {
		h.inflight++
		g.mu.Unlock()
		err := g.d.ApplyRoot(ctx, c, h.root, want)
		g.mu.Lock()
		if h.inflight--; h.inflight == 0 && h.idle != nil {
			close(h.idle)
			h.idle = nil
		}
		g.mu.Unlock()
		return err
	}
	g.mu.Unlock()
	if err := g.waitPivot(ctx, c, h.preRoot); err != nil {
		return err
	}
	g.mu.Lock()
	if g.holds[c.ID] == h {
		delete(g.holds, c.ID)
	}
	g.mu.Unlock()
	return g.d.Apply(ctx, c, want)
}

// waitPivot waits until process c.PID's root is no longer pre. A process
// that is gone returns at once (the Deliverer then reports it gone).
func (g *Gate) waitPivot(ctx context.Context, c container.Info, pre fileID) error {
	deadline := time.Now().Add(g.PivotWait)
	for {
		cur, err := g.rootID(c.PID)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) || err == nil && cur != pre {
			return nil // entered its root, or gone (the Deliverer reports it gone)
		}
		if err != nil {
			return fmt.Errorf("hook: apply to %s: cannot tell whether its process entered its root: %w", c.ID, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hook: apply to %s: its process has not entered its root %v after its hook answered", c.ID, g.PivotWait)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hook: apply to %s: %w", c.ID, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// Release implements deliver.Deliverer.
func (g *Gate) Release(ctx context.Context, c container.Info) error {
	g.mu.Lock()
	if h := g.holds[c.ID]; h != nil && !h.active {
		delete(g.holds, c.ID)
	}
	g.mu.Unlock()
	return g.d.Release(ctx, c)
}
