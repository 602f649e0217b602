package agent

import (
	"context"
	"sync/atomic"
	"time"
)

// workerIdle is how long a delivery worker's goroutine waits for the next
// container to serve before it ends.
const workerIdle = 2 * time.Second

// workers runs the per-container delivery work (work) on goroutines that
// are kept a while once done, so that a rotation reaching every container
// again reuses them instead of starting (and growing the stacks of) one
// goroutine per container each time: at 10,000 simulated containers, the
// goroutines' start, stack growth and end were an eighth of the agents'
// CPU. Containers are still served in parallel: a job nobody idle takes
// gets a goroutine of its own.
type workers struct {
	jobs    chan func() // unbuffered: a send succeeds only into an idle worker
	started atomic.Int64
}

func newWorkers() *workers { return &workers{jobs: make(chan func())} }

// run runs f on an idle worker, or on a new one.
func (w *workers) run(ctx context.Context, f func()) {
	select {
	case w.jobs <- f:
	default:
		w.started.Add(1)
		go w.loop(ctx, f)
	}
}

// loop runs f, then the jobs it is handed, until it has been idle for
// workerIdle or ctx ends.
func (w *workers) loop(ctx context.Context, f func()) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		f()
		idle.Reset(workerIdle)
		select {
		case f = <-w.jobs:
		case <-idle.C:
			return
		case <-ctx.Done():
			return
		}
	}
}
