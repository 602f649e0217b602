package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/container"
	"coffer/internal/policy"
	"coffer/internal/secret"
)

// handle applies one server message.
func (a *Agent) handle(ctx context.Context, m *cofferv1.ServerMessage) {
	switch msg := m.Msg.(type) {
	case *cofferv1.ServerMessage_Values:
		a.handleValues(msg.Values.GetValues())
	case *cofferv1.ServerMessage_Desired:
		a.handleDesired(ctx, msg.Desired)
	case *cofferv1.ServerMessage_Batch:
		a.handleValues(msg.Batch.GetValues().GetValues())
		a.setAckHold(msg.Batch.GetAckHoldMs())
		// The batch's containers count as under way until all are
		// handed to workers: a first one done before the next is handed
		// over must not have its acknowledgement sent alone.
		a.busyN.Add(1)
		for _, d := range msg.Batch.GetDesired() {
			a.handleDesired(ctx, d)
		}
		a.unbusy()
	}
}

func (a *Agent) handleValues(vals []*cofferv1.SecretValue) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	for _, v := range vals {
		k := verKey{v.GetSecret(), v.GetVersion()}
		e := a.values[k]
		if e == nil {
			e = &valueEntry{}
			a.values[k] = e
		}
		e.at = now
		if e.has {
			// Keep the buffer we have: a worker may be writing it.
			secret.Value(v.Value).Zero()
		} else {
			e.v, e.has = secret.Value(v.Value), true
		}
		v.Value = nil
	}
}

func (a *Agent) handleDesired(ctx context.Context, d *cofferv1.Desired) {
	a.mu.Lock()
	defer a.mu.Unlock()
	info, ok := a.running[d.GetContainerId()]
	if !ok {
		return // stopped meanwhile
	}
	t := a.targets[d.ContainerId]
	if t == nil {
		t = &target{info: info}
		a.targets[d.ContainerId] = t
	}
	a.setWantLocked(t, d)
	t.proc.wantSess = a.sessionN
	if !t.busy {
		a.setBusyLocked(t, true)
		a.workers.run(ctx, func() { a.work(ctx, t) })
	}
}

// setBusyLocked marks t as having a worker or not, and counts the targets
// that have one: their acknowledgements are on the way (see sender).
func (a *Agent) setBusyLocked(t *target, busy bool) {
	if t.busy == busy {
		return
	}
	t.busy = busy
	if busy {
		a.busyN.Add(1)
		return
	}
	a.unbusy()
}

// unbusy drops one from busyN and tells the sender when none is left.
func (a *Agent) unbusy() {
	if a.busyN.Add(-1) == 0 {
		select {
		case a.quiet <- struct{}{}:
		default:
		}
	}
}

// work applies a container's newest desired state until none is left. One
// worker runs per container at a time; containers are served in parallel.
func (a *Agent) work(ctx context.Context, t *target) {
	for {
		if more, _ := a.step(ctx, t); !more {
			return
		}
	}
}

// step applies t's newest wanted state once, and reports false (t no
// longer busy) when there was none to apply; err is the Deliverer's.
func (a *Agent) step(ctx context.Context, t *target) (more bool, err error) {
	a.mu.Lock()
	d := t.want
	// A container reported before its process exists (Prepare) waits
	// for its pid: StartNow or the runtime's Started brings it.
	if d == nil || t.gone || t.info.PID == 0 {
		a.setBusyLocked(t, false)
		if t.gone {
			a.dropTargetLocked(t)
		}
		a.mu.Unlock()
		return false, nil
	}
	// The reference moves from want to current.
	t.want = nil
	old := t.current
	t.current = d
	t.proc.curSess = t.proc.wantSess
	a.unrefLocked(old)
	info := t.info
	files, err := a.filesLocked(d)
	sigs := signalsFor(t.held, d)
	prevDigests, prevLogged := t.proc.digests, t.proc.logged
	a.mu.Unlock()

	var proc []*cofferv1.ProcessFile
	logged := prevLogged
	if err == nil {
		err = a.cfg.Deliverer.Apply(ctx, info, files)
		if err == nil {
			var digests map[string][]fileDigest
			if a.cfg.ExecState != nil { // only the process report reads them
				digests = noteDigests(prevDigests, files)
			}
			a.mu.Lock()
			t.held = heldFiles(t.held, d)
			t.proc.digests = digests
			a.mu.Unlock()
			err = a.signal(ctx, info, sigs)
			if err == nil {
				proc, logged = a.processReport(ctx, containerRef{info.ID, info.Name, info.PID}, d, digests, prevLogged)
			}
		}
	}
	m, ack := newApplied()
	ack.ContainerId, ack.Generation, ack.Process = info.ID, d.Generation, proc
	if err != nil {
		ack.Error = err.Error()
		a.log.Error("delivery failed", "container", info.Name, "id", info.ID, "err", err)
	} else if a.log.Enabled(ctx, slog.LevelDebug) { // its arguments cost allocations even when off
		a.log.Debug("delivered", "container", info.Name, "files", len(files), "generation", d.Generation)
	}
	a.mu.Lock()
	t.proc.logged = logged
	if err == nil {
		t.proc.okGen, t.proc.report, t.proc.watchUntil = d.Generation, proc, time.Now().Add(processWatch)
	}
	a.appliedCnt++
	a.enqueueLocked(m)
	a.mu.Unlock()
	return true, err
}

// appliedMsg is an acknowledgement's three messages in one allocation.
type appliedMsg struct {
	m   cofferv1.AgentMessage
	one cofferv1.AgentMessage_Applied
	ack cofferv1.Applied
}

// newApplied returns an AgentMessage holding an empty Applied, and that
// Applied, allocated at once.
func newApplied() (*cofferv1.AgentMessage, *cofferv1.Applied) {
	am := &appliedMsg{}
	am.one.Applied = &am.ack
	am.m.Msg = &am.one
	return &am.m, &am.ack
}

// heldFiles is what a container holds once d is applied: secret and
// version by file name. It refills m (called with a.mu held: only the
// target's worker writes it, under the lock), or makes a map if m is nil.
func heldFiles(m map[string]verKey, d *cofferv1.Desired) map[string]verKey {
	if m == nil {
		m = make(map[string]verKey, len(d.GetFiles()))
	} else {
		clear(m)
	}
	for _, f := range d.GetFiles() {
		m[f.File] = verKey{f.Secret, f.Version}
	}
	return m
}

// signalsFor returns the signals (names, sorted, each once) that applying
// d after held asks for: those of "signal:" contracts whose file the
// container held with another secret or version. A first delivery (the
// file was not held: a new container, a new binding, or a state this
// agent process never applied) signals nothing: the process reads the
// file when it starts.
func signalsFor(held map[string]verKey, d *cofferv1.Desired) []string {
	var out []string
	for _, f := range d.GetFiles() {
		sig, ok := policy.RotationSignal(f.GetRotation())
		if !ok {
			continue
		}
		if prev, had := held[f.File]; had && prev != (verKey{f.Secret, f.Version}) && !slices.Contains(out, sig) {
			out = append(out, sig)
		}
	}
	slices.Sort(out)
	return out
}

// signalTimeout bounds one signal through the runtime.
const signalTimeout = 10 * time.Second

// signal has the runtime send each of sigs to container c's main process,
// after its files were swapped. The error says the files are in place.
func (a *Agent) signal(ctx context.Context, c container.Info, sigs []string) error {
	if len(sigs) == 0 {
		return nil
	}
	sr, ok := a.cfg.Runtime.(container.Signaler)
	if !ok {
		return fmt.Errorf("files written, but the container runtime cannot signal a container (%s not sent)", strings.Join(sigs, ", "))
	}
	var errs []error
	for _, sig := range sigs {
		sctx, cancel := context.WithTimeout(ctx, signalTimeout)
		err := sr.Signal(sctx, c.ID, sig)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("files written, but %s to the container's main process failed: %w", sig, err))
			continue
		}
		a.log.Info("signalled container after rotation", "container", c.Name, "id", c.ID, "signal", sig)
	}
	return errors.Join(errs...)
}

// filesLocked turns a desired state into files whose values point into the
// agent's value cache.
func (a *Agent) filesLocked(d *cofferv1.Desired) ([]secret.File, error) {
	files := make([]secret.File, 0, len(d.Files))
	for _, f := range d.Files {
		e := a.values[verKey{f.Secret, f.Version}]
		if e == nil || !e.has {
			return nil, fmt.Errorf("value of %s version %d not received", f.Secret, f.Version)
		}
		files = append(files, secret.File{
			Secret: f.Secret, Version: f.Version, Name: f.File, Mode: os.FileMode(f.Mode) & os.ModePerm,
			UID: int(f.Uid), GID: int(f.Gid), Value: e.v,
		})
	}
	return files, nil
}

// Values are reference counted: every file of a target's want and current
// state holds a reference to its value, so a value no container needs is
// found when its last reference goes, without scanning every target (which,
// done after each delivery, made a rotation cost O(containers²) per agent).

// valueEntry is one secret version: its value, once received, and the
// references to it. One map holds both, so that a delivery looks a version
// up once, not once per map.
type valueEntry struct {
	v    secret.Value
	has  bool      // v was received (an empty value is nil)
	at   time.Time // when v last arrived
	refs int       // files of targets' want and current states that refer to it
}

// dropValueLocked zeroes and forgets e's value; e goes too unless a state
// still refers to it.
func (a *Agent) dropValueLocked(k verKey, e *valueEntry) {
	e.v.Zero()
	e.v, e.has = nil, false
	if e.refs <= 0 {
		delete(a.values, k)
	}
}

// setWantLocked replaces t's newest wanted state.
func (a *Agent) setWantLocked(t *target, d *cofferv1.Desired) {
	a.refLocked(d)
	old := t.want
	t.want = d
	a.unrefLocked(old)
}

// dropTargetLocked forgets a target that no worker uses.
func (a *Agent) dropTargetLocked(t *target) {
	if a.targets[t.info.ID] == t {
		delete(a.targets, t.info.ID)
	}
	a.unrefLocked(t.want)
	a.unrefLocked(t.current)
	t.want, t.current = nil, nil
}

func (a *Agent) refLocked(d *cofferv1.Desired) {
	if d == nil {
		return
	}
	for _, f := range d.Files {
		k := verKey{f.Secret, f.Version}
		e := a.values[k]
		if e == nil {
			e = &valueEntry{}
			a.values[k] = e
		}
		e.refs++
	}
}

// unrefLocked drops d's references and zeroes the values left without one,
// once their grace period is over (the periodic gcLocked takes the others).
func (a *Agent) unrefLocked(d *cofferv1.Desired) {
	if d == nil {
		return
	}
	var now time.Time
	for _, f := range d.Files {
		k := verKey{f.Secret, f.Version}
		e := a.values[k]
		if e == nil {
			continue
		}
		if e.refs--; e.refs > 0 {
			continue
		}
		e.refs = 0
		if !e.has {
			delete(a.values, k)
			continue
		}
		if now.IsZero() {
			now = time.Now()
		}
		if now.Sub(e.at) > a.cfg.ValueGrace {
			a.dropValueLocked(k, e)
		}
	}
}

// gcLocked zeroes and drops values no container wants any more.
func (a *Agent) gcLocked() {
	now := time.Now()
	for k, e := range a.values {
		// A value is kept a while after it arrives: the Desired messages
		// that refer to it follow it on the stream.
		if e.has && e.refs <= 0 && now.Sub(e.at) > a.cfg.ValueGrace {
			a.dropValueLocked(k, e)
		}
	}
}

// Stats reports what the agent holds, for tests and benchmarks.
type Stats struct {
	Containers int
	Values     int
	Applied    uint64
	Connected  bool
	Server     string // the address of the current session, if any
	// Resumed counts the sessions whose TLS handshake resumed an earlier
	// session (a ticket) instead of a full handshake.
	Resumed uint64
}

// Stats returns a snapshot of the agent's state.
func (a *Agent) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.statsLocked()
}

func (a *Agent) statsLocked() Stats {
	values := 0
	for _, e := range a.values {
		if e.has {
			values++
		}
	}
	return Stats{Containers: len(a.running), Values: values, Applied: a.appliedCnt, Connected: a.connected, Server: a.server, Resumed: a.resumedCnt}
}
