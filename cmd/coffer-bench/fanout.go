package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"

	"coffer/internal/secret"
)

// fanoutOpts are the fanout mode's knobs.
type fanoutOpts struct {
	common
	Agents      int
	Containers  int // per agent
	Rotations   int
	Revocations int
	Bursts      int
	BurstSize   int
	Settle      time.Duration
	EnrollConc  int
	Timeout     time.Duration
	// Servers > 1 runs that many coffer-servers on one etcd member, the
	// agents spread over them, every write through the first.
	Servers int
}

const (
	sharedSecret  = "bench/shared"
	sharedBinding = "bench-shared"
	sharedFile    = "shared"
	ownFile       = "own"
)

// runFanout drives a real coffer-server with o.Agents simulated agents of
// o.Containers containers each and measures enrollment, start, rotation and
// revocation fan-out, and the memory and CPU it costs.
func runFanout(ctx context.Context, o fanoutOpts) (*Report, error) {
	rep := newReport("fanout", map[string]any{
		"agents": o.Agents, "containers_per_agent": o.Containers, "rotations": o.Rotations,
		"revocations": o.Revocations, "bursts": o.Bursts, "burst_size": o.BurstSize, "settle": o.Settle.String(),
	})
	dir, cleanup, err := o.workDir()
	if err != nil {
		return nil, err
	}
	defer cleanup()
	var srv *serverProc
	var all []*serverProc // every server, for the profiles
	etcdPid := 0
	if o.Servers > 1 {
		cl, err := o.startCluster(ctx, dir, o.Servers)
		if err != nil {
			return nil, err
		}
		defer cl.Stop()
		srv, all = cl.servers[0], cl.servers
		etcdPid = cl.etcd.Process.Pid
		rep.note("%d coffer-servers (pids %s) on one etcd member, agents spread over them, writes through the first; CPU and RSS figures are the first server's", o.Servers, cl.pids())
	} else {
		srv, err = o.startServer(ctx, dir)
		if err != nil {
			return nil, err
		}
		defer srv.Stop()
		all = []*serverProc{srv}
	}
	total := o.Agents * o.Containers
	o.logf("server %s (pid %d); %d agents x %d containers", srv.Addr, srv.Pid(), o.Agents, o.Containers)

	// The world: one secret bound to every container, and one secret and
	// binding per container.
	t0 := time.Now()
	if _, err := srv.putRandomSecret(ctx, sharedSecret); err != nil {
		return nil, err
	}
	if err := srv.putBinding(ctx, sharedBinding, binding{Secret: sharedSecret, Selector: "coffer-bench=1", File: sharedFile}); err != nil {
		return nil, err
	}
	if err := parallel(ctx, total, 16, func(i int) error {
		name := fmt.Sprintf("bench/own-%d", i)
		if _, err := srv.putRandomSecret(ctx, name); err != nil {
			return err
		}
		return srv.putBinding(ctx, fmt.Sprintf("bench-own-%d", i), binding{Secret: name, Selector: fmt.Sprintf("ctr=%d", i), File: ownFile})
	}); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	phase := func(name string) {
		if u, err := usageOf(srv.Pid()); err == nil {
			rep.addFigure("server RSS after "+name, mib(u.RSSBytes), "MiB", "")
		}
	}
	phase("setup")
	rep.addFigure("setup: secrets and bindings written", float64(total+1), "each", "")
	rep.addFigure("setup: secret put + binding put (16 clients)", float64(total+1)/time.Since(t0).Seconds(), "pairs/s", "")
	o.logf("setup: %d secrets and bindings in %s", total+1, time.Since(t0).Round(time.Millisecond))

	en, err := enroll(ctx, srv, dir, o.Agents, o.EnrollConc)
	if err != nil {
		return nil, err
	}
	rep.addLatency(summarize(fmt.Sprintf("enroll one agent (%d at a time)", o.EnrollConc), en.latency), "").noPlot = true
	rep.addFigure(fmt.Sprintf("enroll %d agents: wall time", o.Agents), en.wall.Seconds(), "s", "")
	rep.addFigure("enroll: errors", float64(en.errors), "", "0")
	o.logf("enrolled %d agents in %s (%d errors)", o.Agents, en.wall.Round(time.Millisecond), en.errors)

	heap0, gor0 := liveHeap()
	rec := &recorder{}
	warns := &warnCounter{}
	actx, stopAgents := context.WithCancel(ctx)
	agents := startAgents(actx, srv, dir, en.certs, rec.onApply, slog.New(warns))
	defer func() {
		stopAgents()
		for _, a := range agents {
			<-a.done
		}
	}()
	if err := waitConnected(ctx, agents, o.Timeout); err != nil {
		return nil, err
	}
	heap1, gor1 := liveHeap()
	phase("agents connected")
	o.logf("%d agents connected", o.Agents)

	// Every container starts at once: the first delivery of two files each.
	both := func(fs []secret.File) bool {
		_, a := fileOf(fs, sharedFile)
		_, b := fileOf(fs, ownFile)
		return a && b
	}
	starts := make([]time.Time, total)
	e := rec.expect(0, total, both)
	for a := range o.Agents {
		for c := range o.Containers {
			i := a*o.Containers + c
			starts[i] = time.Now()
			agents[a].rt.Start(simInfo(i, total))
		}
	}
	if err := e.wait(ctx, o.Timeout); err != nil {
		return nil, fmt.Errorf("initial delivery: %w", err)
	}
	lat, _ := e.since(time.Time{}, starts)
	rep.addLatency(summarize(fmt.Sprintf("start -> grant delivered, all %d started at once", total), lat), "")
	heap2, gor2 := liveHeap()
	phase("initial delivery")
	o.logf("initial delivery to %d containers done", total)
	time.Sleep(o.Settle)
	// The servers still append the first delivery's audit records and
	// publish presence: the measured rounds start once they are idle.
	if d, ok := waitIdle(ctx, all, 60*time.Second); ok {
		o.logf("servers idle %s after the initial delivery", d.Round(time.Millisecond))
	} else {
		rep.note("the servers were still busy %s after the initial delivery; the rounds started anyway", d.Round(time.Second))
	}

	// Each round: the API call, then wait until every container's Apply
	// shows the new state. Latencies are taken from the call returning (as
	// the goal is stated) and from the call being sent (which adds the
	// durable store and audit writes the API makes before answering).
	round := func(what string, r int, check func([]secret.File) bool, call func() error) (fromRet, fromSent []time.Duration, err error) {
		e := rec.expect(0, total, check)
		sent := time.Now()
		err = call()
		ret := time.Now()
		if err != nil {
			return nil, nil, err
		}
		if err := e.wait(ctx, o.Timeout); err != nil {
			return nil, nil, fmt.Errorf("%s %d: %w", what, r, err)
		}
		fromRet, early := e.since(ret, nil)
		fromSent, _ = e.since(sent, nil)
		o.logf("%s %d: API call %s; last container %s after it returned (%d of %d before)", what, r,
			ret.Sub(sent).Round(time.Millisecond), maxDur(fromRet).Round(time.Millisecond), early, total)
		time.Sleep(o.Settle)
		return fromRet, fromSent, nil
	}
	stopProfile := o.profileStart(all...)
	u0, _ := usageOf(srv.Pid())
	others0 := cpuOf(all[1:])
	etcd0, _ := usageOf(etcdPid)
	self0, _ := usageOf(os.Getpid())
	var rot, rotSent, rotSame, rotCross, rotSameSent, rotCrossSent []time.Duration
	version := uint64(1)
	for r := range o.Rotations {
		want := version + 1
		a, b, err := round("rotation", r, func(fs []secret.File) bool {
			f, ok := fileOf(fs, sharedFile)
			return ok && f.Version == want
		}, func() error {
			v, err := srv.putRandomSecret(ctx, sharedSecret)
			if err == nil && v != want {
				err = fmt.Errorf("server made version %d, want %d", v, want)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		version = want
		rot, rotSent = append(rot, a...), append(rotSent, b...)
		if o.Servers > 1 {
			for i := range a { // in container order
				if (i/o.Containers)%o.Servers == 0 {
					rotSame, rotSameSent = append(rotSame, a[i]), append(rotSameSent, b[i])
				} else {
					rotCross, rotCrossSent = append(rotCross, a[i]), append(rotCrossSent, b[i])
				}
			}
		}
	}
	u1, _ := usageOf(srv.Pid())
	others1 := cpuOf(all[1:])
	etcd1, _ := usageOf(etcdPid)
	self1, _ := usageOf(os.Getpid())
	phase("rotations")
	n := fmt.Sprintf("(%d x %d)", o.Rotations, total)
	rep.addLatency(summarize("rotation: PUT returned -> new value in container "+n, rot), "p99 <= 1000 ms")
	rep.addLatency(summarize("rotation: PUT sent -> new value in container "+n, rotSent), "")
	if o.Servers > 1 {
		rep.addLatency(summarize("rotation: PUT returned -> new value, agents on the server written to", rotSame), "")
		rep.addLatency(summarize("rotation: PUT returned -> new value, agents on the other servers (etcd watch)", rotCross), "p99 <= 250 ms")
		rep.addLatency(summarize("rotation: PUT sent -> new value, agents on the server written to", rotSameSent), "")
		rep.addLatency(summarize("rotation: PUT sent -> new value, agents on the other servers (etcd watch)", rotCrossSent), "")
	}
	if o.Rotations > 0 {
		rep.addFigure("server CPU per rotation (incl. acks and audit)", (u1.CPUSeconds-u0.CPUSeconds)/float64(o.Rotations), "s", "")
		for i := range others0 {
			rep.addFigure(fmt.Sprintf("server %d (not written to) CPU per rotation", i+1), (others1[i]-others0[i])/float64(o.Rotations), "s", "")
		}
		if etcdPid != 0 {
			rep.addFigure("etcd CPU per rotation", (etcd1.CPUSeconds-etcd0.CPUSeconds)/float64(o.Rotations), "s", "")
		}
		rep.addFigure("agent side (this process) CPU per rotation", (self1.CPUSeconds-self0.CPUSeconds)/float64(o.Rotations), "s", "")
	}

	var rev, revSent, grant []time.Duration
	for r := range o.Revocations {
		a, b, err := round("revocation", r, func(fs []secret.File) bool { _, ok := fileOf(fs, sharedFile); return !ok },
			func() error { return srv.deleteBinding(ctx, sharedBinding) })
		if err != nil {
			return nil, err
		}
		rev, revSent = append(rev, a...), append(revSent, b...)
		a, _, err = round("re-grant", r, func(fs []secret.File) bool { _, ok := fileOf(fs, sharedFile); return ok },
			func() error {
				return srv.putBinding(ctx, sharedBinding, binding{Secret: sharedSecret, Selector: "coffer-bench=1", File: sharedFile})
			})
		if err != nil {
			return nil, err
		}
		grant = append(grant, a...)
	}
	n = fmt.Sprintf("(%d x %d)", o.Revocations, total)
	rep.addLatency(summarize("revocation: binding DELETE returned -> file gone "+n, rev), "p99 <= 1000 ms")
	rep.addLatency(summarize("revocation: binding DELETE sent -> file gone "+n, revSent), "")
	rep.addLatency(summarize("grant: binding PUT returned -> file present "+n, grant), "")
	stopProfile()

	var burst []time.Duration
	for b := range o.Bursts {
		lo := total + b*o.BurstSize
		e := rec.expect(lo, lo+o.BurstSize, both)
		st := make([]time.Time, o.BurstSize)
		for j := range o.BurstSize {
			st[j] = time.Now()
			agents[j%len(agents)].rt.Start(simInfo(lo+j, total))
		}
		if err := e.wait(ctx, o.Timeout); err != nil {
			return nil, fmt.Errorf("start burst %d: %w", b, err)
		}
		lat, _ := e.since(time.Time{}, st)
		burst = append(burst, lat...)
		for j := range o.BurstSize {
			agents[j%len(agents)].rt.Stop(containerID(lo + j))
		}
		time.Sleep(o.Settle)
	}
	if o.Bursts > 0 {
		rep.addLatency(summarize(fmt.Sprintf("start -> grant delivered, bursts of %d starts (%d bursts)", o.BurstSize, o.Bursts), burst), "")
	}

	u, err := usageOf(srv.Pid())
	if err != nil {
		return nil, err
	}
	rep.addFigure("server CPU, whole run", u.CPUSeconds, "s", "")
	rep.addFigure(fmt.Sprintf("server peak RSS (VmHWM), %d secrets/bindings/containers", total), mib(u.PeakRSS), "MiB", "<= 256 MB (244 MiB)")
	rep.addFigure("agent side: heap per connected agent (no containers)", kib(heap1-heap0)/float64(o.Agents), "KiB", "")
	rep.addFigure("agent side: heap per simulated container", kib(heap2-heap1)/float64(total), "KiB", "")
	rep.addFigure("agent side: goroutines per agent", float64(gor1-gor0)/float64(o.Agents), "", "")
	rep.addFigure("agent side: goroutines per container", float64(gor2-gor1)/float64(total), "", "")
	rep.addFigure("agent warnings/errors logged", float64(warns.n.Load()), "", "0")
	for _, m := range warns.first {
		rep.note("agent log: %s", m)
	}
	return rep, nil
}

// liveHeap returns the live heap after a full GC and the goroutine count.
func liveHeap() (uint64, int) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, runtime.NumGoroutine()
}

func maxDur(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

func mib(b uint64) float64       { return float64(b) / (1 << 20) }
func kib(b uint64) float64       { return float64(int64(b)) / (1 << 10) }
func stderrf(f string, a ...any) { fmt.Fprintf(os.Stderr, f, a...) }

// cpuOf is the CPU seconds each server has used so far (0 where unknown).
func cpuOf(srvs []*serverProc) []float64 {
	out := make([]float64, len(srvs))
	for i, s := range srvs {
		if u, err := usageOf(s.Pid()); err == nil {
			out[i] = u.CPUSeconds
		}
	}
	return out
}

// waitIdle waits until the servers together use less than a tenth of a
// core over 250 ms, or max has passed (ok false), and returns how long it
// waited.
func waitIdle(ctx context.Context, srvs []*serverProc, max time.Duration) (time.Duration, bool) {
	t0 := time.Now()
	sum := func() float64 {
		var s float64
		for _, c := range cpuOf(srvs) {
			s += c
		}
		return s
	}
	prev := sum()
	for time.Since(t0) < max && ctx.Err() == nil {
		time.Sleep(250 * time.Millisecond)
		now := sum()
		if now-prev < 0.025 {
			return time.Since(t0), true
		}
		prev = now
	}
	return time.Since(t0), false
}
