package agent

import (
	"context"
	"time"

	"coffer/internal/container"
)

// Race-free first delivery (a runtime hook such as NRI's, on Kubernetes
// nodes): the hook reports a container when it is created, before its
// process exists (Prepare), so that the server's answer is in the agent's
// memory by the time the container starts; when the container's process
// exists but has not run its first instruction, the hook calls StartNow,
// which writes the files the agent holds for it from memory, never waiting
// on the server. A container whose state has not arrived by then starts
// without its files and gets them as soon as they come (fail-open).

// Prepare reports a container that is being created (info.PID is 0) to the
// server, unless the agent does not serve it (OnlyLabels). The desired
// state the server sends waits, in memory, for StartNow or the runtime's
// Started. It reports whether the agent serves the container.
func (a *Agent) Prepare(info container.Info) bool {
	if !a.serves(info) {
		return false
	}
	info.PID = 0
	a.mu.Lock()
	defer a.mu.Unlock()
	if cur, ok := a.running[info.ID]; ok && cur.PID != 0 {
		return true // already running: nothing to prepare
	}
	a.running[info.ID] = info
	a.enqueueLocked(startedMsg(info))
	return true
}

// StartNow applies, in the caller's goroutine and within limit, the state
// the agent holds for a container whose process now exists (info.PID set)
// but has not started; later states are applied by a worker bound to ctx.
// It returns at once if the agent holds no state for it yet or a worker
// already applies it: the state then follows as usual (fail-open).
//
// ready reports whether the container now holds what the server last said
// it must (which may be nothing), or is not served: a hook that enforces
// fail-closed for a pod refuses the start when it is false.
func (a *Agent) StartNow(ctx context.Context, info container.Info, limit time.Duration) (ready bool) {
	if !a.serves(info) {
		return true
	}
	if info.PID == 0 {
		return false
	}
	deadline := time.Now().Add(limit)
	a.mu.Lock()
	if _, ok := a.running[info.ID]; !ok {
		// Not prepared (the agent restarted in between): report it now;
		// its files follow the server's answer.
		a.running[info.ID] = info
		a.enqueueLocked(startedMsg(info))
		a.mu.Unlock()
		return false
	}
	a.running[info.ID] = info
	t := a.targets[info.ID]
	// A worker finishing with an earlier process of the same id (its last
	// step only finds nothing more to do) is waited for, briefly.
	for t != nil && t.busy && t.info.PID != info.PID && time.Now().Before(deadline) {
		a.mu.Unlock()
		time.Sleep(2 * time.Millisecond)
		a.mu.Lock()
		t = a.targets[info.ID]
	}
	if t != nil && !t.busy && t.want == nil && t.current != nil && t.info.PID != 0 && t.info.PID != info.PID {
		// The same container id with a new process (Docker reuses the id
		// when a refused start is retried): what was applied went into the
		// old process, which never ran; apply it again into this one.
		t.want, t.current, t.held = t.current, nil, nil
	}
	if t == nil || t.busy || t.want == nil {
		done := false
		if t != nil {
			t.info = info
			// Applied already (the runtime's start came first), nothing pending.
			done = !t.busy && t.want == nil && t.current != nil
		}
		a.mu.Unlock()
		return done
	}
	t.info = info
	a.setBusyLocked(t, true)
	a.mu.Unlock()
	sctx, cancel := context.WithDeadline(ctx, deadline)
	more, err := a.step(sctx, t)
	cancel()
	if more {
		a.workers.run(ctx, func() { a.work(ctx, t) }) // t is still busy: the worker takes it over
	}
	return more && err == nil
}

// Forget drops a container that was prepared and never got a pid (its
// start failed, or was refused): the server forgets it and the values it
// was sent leave memory. A container that runs is left to the runtime's
// events.
func (a *Agent) Forget(ctx context.Context, id string) {
	a.mu.Lock()
	info, ok := a.running[id]
	a.mu.Unlock()
	if ok && info.PID == 0 {
		a.stopped(ctx, id)
	}
}

// kickLocked starts t's worker if a wanted state waits and none runs.
func (a *Agent) kickLocked(ctx context.Context, t *target) {
	if t.want != nil && !t.busy && !t.gone && t.info.PID != 0 {
		a.setBusyLocked(t, true)
		a.workers.run(ctx, func() { a.work(ctx, t) })
	}
}
