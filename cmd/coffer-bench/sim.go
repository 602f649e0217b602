package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"coffer/internal/agent"
	"coffer/internal/container"
	"coffer/internal/container/fake"
	"coffer/internal/deliver/memory"
	"coffer/internal/secret"
)

// A simulated agent is the real agent (package agent) with an in-memory
// runtime and deliverer: everything from the Sync stream to Deliverer.Apply
// is the code coffer-agent runs.
type simAgent struct {
	name string
	rt   *fake.Runtime
	ag   *agent.Agent
	done chan struct{}
}

// containerID names simulated container i; recorder parses it back.
func containerID(i int) string { return fmt.Sprintf("ctr-%08d", i) }

func containerIndex(id string) (int, bool) {
	s, ok := strings.CutPrefix(id, "ctr-")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(s)
	return i, err == nil
}

// simInfo is what the runtime reports of simulated container i, bound by
// the labels to the shared secret and to own secret i%own.
func simInfo(i, own int) container.Info {
	return container.Info{
		ID: containerID(i), Name: fmt.Sprintf("bench-%d", i),
		Labels: map[string]string{
			"coffer-bench": "1", "ctr": strconv.Itoa(i % own), "app": "bench-" + strconv.Itoa(i%own/10),
			"com.docker.compose.project": "bench", "com.docker.compose.service": "app",
		},
		Image:       "registry.example.com/bench/app:1.0",
		ImageDigest: "sha256:" + strings.Repeat("ab", 32),
		PID:         1000 + i,
	}
}

// enrollment is the result of enrolling agents.
type enrollment struct {
	certs   []tls.Certificate
	latency []time.Duration
	errors  int
	wall    time.Duration
}

// enroll makes n join tokens and enrolls n agents through agent.LoadOrEnroll
// (CSR over TLS to POST /v1/enroll), conc at a time. Failures are retried
// with a new token up to 3 times and counted.
func enroll(ctx context.Context, srv *serverProc, dir string, n, conc int) (*enrollment, error) {
	tokens := make([]string, n)
	if err := parallel(ctx, n, 16, func(i int) (err error) {
		tokens[i], err = srv.joinToken(ctx)
		return err
	}); err != nil {
		return nil, fmt.Errorf("join tokens: %w", err)
	}
	e := &enrollment{certs: make([]tls.Certificate, n), latency: make([]time.Duration, n)}
	var errs atomic.Int64
	start := time.Now()
	err := parallel(ctx, n, conc, func(i int) error {
		tok := tokens[i]
		for try := 0; ; try++ {
			t0 := time.Now()
			cert, err := agent.LoadOrEnroll(ctx, srv.Addr, srv.CAPEM, filepath.Join(dir, "agents", strconv.Itoa(i)), agentName(i), tok)
			if err == nil {
				e.certs[i], e.latency[i] = cert, time.Since(t0)
				return nil
			}
			errs.Add(1)
			if try == 3 {
				return fmt.Errorf("enroll %s: %w", agentName(i), err)
			}
			if tok, err = srv.joinToken(ctx); err != nil {
				return err
			}
		}
	})
	e.wall = time.Since(start)
	e.errors = int(errs.Load())
	return e, err
}

func agentName(i int) string { return fmt.Sprintf("bench-agent-%04d", i) }

// parallel runs fn(0..n-1), conc at a time, and returns the first error.
func parallel(ctx context.Context, n, conc int, fn func(i int) error) error {
	var (
		next  atomic.Int64
		first error
		once  sync.Once
		wg    sync.WaitGroup
	)
	for range min(conc, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// startAgents runs one real agent per certificate, each with its own fake
// runtime and a memory deliverer calling onApply.
func startAgents(ctx context.Context, srv *serverProc, dir string, certs []tls.Certificate, onApply func(string, []secret.File), log *slog.Logger) []*simAgent {
	agents := make([]*simAgent, len(certs))
	for i, cert := range certs {
		a := &simAgent{name: agentName(i), rt: fake.New(), done: make(chan struct{})}
		addr := srv.AgentAddr
		if len(srv.AgentAddrs) > 0 {
			addr = srv.AgentAddrs[i%len(srv.AgentAddrs)]
		}
		a.ag = agent.New(agent.Config{
			Server: addr, CAPEM: srv.CAPEM, Cert: cert,
			StateDir:  filepath.Join(dir, "agents", strconv.Itoa(i)),
			Runtime:   a.rt,
			Deliverer: memory.New(memory.Config{OnApply: onApply}),
			Logger:    log,
		})
		go func() { defer close(a.done); a.ag.Run(ctx) }()
		agents[i] = a
	}
	return agents
}

// waitConnected waits until every agent has an open stream.
func waitConnected(ctx context.Context, agents []*simAgent, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n := 0
		for _, a := range agents {
			if a.ag.Stats().Connected {
				n++
			}
		}
		if n == len(agents) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d agents connected after %s", n, len(agents), timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// recorder receives every simulated Apply and timestamps, per container,
// the first one that satisfies the current expectation.
type recorder struct {
	cur atomic.Pointer[expectation]
}

// expectation waits for containers [lo, hi) to satisfy check.
type expectation struct {
	lo, hi    int
	check     func(files []secret.File) bool
	at        []atomic.Int64 // unix ns of the first satisfying Apply, by index-lo
	remaining atomic.Int64
	done      chan struct{}
}

func (r *recorder) expect(lo, hi int, check func([]secret.File) bool) *expectation {
	e := newExpectation(lo, hi)
	e.check = check
	r.cur.Store(e)
	return e
}

func newExpectation(lo, hi int) *expectation {
	e := &expectation{lo: lo, hi: hi, at: make([]atomic.Int64, hi-lo), done: make(chan struct{})}
	e.remaining.Store(int64(hi - lo))
	return e
}

// mark records that container i (an index from 0, relative to lo) got
// there at now, if it had not yet.
func (e *expectation) mark(i int, now time.Time) {
	if e.at[i].CompareAndSwap(0, now.UnixNano()) && e.remaining.Add(-1) == 0 {
		close(e.done)
	}
}

func (r *recorder) onApply(id string, files []secret.File) {
	now := time.Now()
	defer func() {
		for _, f := range files {
			f.Value.Zero()
		}
	}()
	e := r.cur.Load()
	i, ok := containerIndex(id)

	if e == nil || !ok || i < e.lo || i >= e.hi {
		return
	}
	if e.at[i-e.lo].Load() != 0 || !e.check(files) {
		return
	}
	e.mark(i-e.lo, now)
}

// wait blocks until every container satisfied the expectation or timeout.
func (e *expectation) wait(ctx context.Context, timeout time.Duration) error {
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(timeout):
		return fmt.Errorf("%d of %d containers not there after %s", e.remaining.Load(), e.hi-e.lo, timeout)
	}
}

// since returns each container's latency from t0 (or from t0s[i] if t0s is
// not nil), and how many were already there before t0 (counted as 0).
func (e *expectation) since(t0 time.Time, t0s []time.Time) (out []time.Duration, early int) {
	out = make([]time.Duration, 0, len(e.at))
	for i := range e.at {
		at := e.at[i].Load()
		if at == 0 {
			continue
		}
		start := t0
		if t0s != nil {
			start = t0s[i]
		}
		d := time.Duration(at - start.UnixNano())
		if d < 0 {
			d, early = 0, early+1
		}
		out = append(out, d)
	}
	return out, early
}

// fileOf returns the file named name in files.
func fileOf(files []secret.File, name string) (secret.File, bool) {
	for _, f := range files {
		if f.Name == name {
			return f, true
		}
	}
	return secret.File{}, false
}

// warnCounter is a slog handler that counts warnings and errors of the
// simulated agents and keeps the first few messages (never values: the
// agent logs none).
type warnCounter struct {
	n     atomic.Int64
	mu    sync.Mutex
	first []string
}

func (w *warnCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnCounter) Handle(_ context.Context, r slog.Record) error {
	w.n.Add(1)
	w.mu.Lock()
	if len(w.first) < 5 {
		msg := r.Message
		r.Attrs(func(a slog.Attr) bool { msg += " " + a.String(); return true })
		w.first = append(w.first, msg)
	}
	w.mu.Unlock()
	return nil
}
func (w *warnCounter) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnCounter) WithGroup(string) slog.Handler      { return w }
