package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"coffer/internal/container"
	"coffer/internal/secret"
)

// fetchOpts are the fetch mode's knobs.
type fetchOpts struct {
	common
	Agents      int
	Concurrency int
	Secrets     int
	Duration    time.Duration
	Warmup      time.Duration
	Rounds      int
	Vault       string // vault binary; empty: Coffer only
	VaultAudit  bool
}

func fetchCmd(ctx context.Context) *cobra.Command {
	o := fetchOpts{}
	cmd := &cobra.Command{
		Use:   "fetch",
		Short: "Fetch throughput: container start -> secret delivered, at concurrency C (and Vault KV v2 reads with --vault)",
		Long: `Coffer has no read API for people: a value's only way out is an agent's
stream. Its fetch path is therefore one desired-state round trip: a simulated
container starts on one of N agents, the agent reports it, the server matches
its bindings, opens the value and pushes Values+Desired over the agent's mTLS
gRPC stream, the agent applies it (memory deliverer); then the container stops.
C workers do this in a loop for --duration.

With --vault, the same C workers then read KV v2 secrets from a Vault dev
server over TLS (-dev-tls), each worker with its own keep-alive connection, as
N applications would. Both servers run on this machine at once and take
turns under the load (--rounds), so that the shared machine's changes of
speed weigh on both alike.`,
		Example: `  coffer-bench fetch --concurrency 32 --duration 10s --vault /tmp/tools/vault`,
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			rep, err := runFetch(ctx, o)
			if err != nil {
				return err
			}
			return o.finish(rep)
		},
	}
	o.flags(cmd, "fetch.png")
	f := cmd.Flags()
	f.IntVar(&o.Agents, "agents", 0, "simulated agents (default: --concurrency)")
	f.IntVar(&o.Concurrency, "concurrency", 32, "workers fetching at once")
	f.IntVar(&o.Secrets, "secrets", 1000, "distinct secrets fetched at random")
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "measured time per system, split over --rounds")
	f.IntVar(&o.Rounds, "rounds", 3, "turns each system takes (Coffer, Vault, Coffer, ...)")
	f.DurationVar(&o.Warmup, "warmup", 500*time.Millisecond, "unmeasured time before each turn")
	f.StringVar(&o.Vault, "vault", "", "vault binary: also measure a Vault dev server's KV v2 reads")
	f.BoolVar(&o.VaultAudit, "vault-audit", false, "enable a file audit device in Vault (Coffer always audits deliveries)")
	return cmd
}

func runFetch(ctx context.Context, o fetchOpts) (*Report, error) {
	if o.Agents <= 0 {
		o.Agents = o.Concurrency
	}
	o.Rounds = max(1, o.Rounds)
	rep := newReport("fetch", map[string]any{
		"agents": o.Agents, "concurrency": o.Concurrency, "secrets": o.Secrets,
		"duration": o.Duration.String(), "rounds": o.Rounds, "vault": o.Vault != "", "vault_audit": o.VaultAudit,
	})
	dir, cleanup, err := o.workDir()
	if err != nil {
		return nil, err
	}
	defer cleanup()
	c, err := setupCoffer(ctx, o, dir)
	if err != nil {
		return nil, fmt.Errorf("coffer: %w", err)
	}
	defer c.close()
	targets := []*fetchTarget{c}
	if o.Vault != "" {
		v, err := setupVault(ctx, o, dir, rep)
		if err != nil {
			return nil, fmt.Errorf("vault: %w", err)
		}
		defer v.close()
		targets = append(targets, v)
	}
	// The systems take turns, o.Rounds times each, so that a change in the
	// machine's speed during the run (it is shared) weighs on both alike.
	stopProfile := o.profileStart(c.srv)
	for r := range o.Rounds {
		for _, t := range targets {
			u0, _ := usageOf(t.pid)
			self0, _ := usageOf(os.Getpid())
			lat, errs, wall := load(ctx, o.Concurrency, o.Warmup, o.Duration/time.Duration(o.Rounds), t.op)
			u1, _ := usageOf(t.pid)
			self1, _ := usageOf(os.Getpid())
			t.clientCPU += self1.CPUSeconds - self0.CPUSeconds
			t.lat, t.errs, t.wall = append(t.lat, lat...), t.errs+errs, t.wall+wall
			t.cpu += u1.CPUSeconds - u0.CPUSeconds
			t.peak = u1.PeakRSS
			o.logf("round %d: %s %.0f/s", r, t.unit, float64(len(lat))/wall.Seconds())
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		}
	}
	stopProfile()
	for _, t := range targets {
		t.rate = float64(len(t.lat)) / t.wall.Seconds()
		rep.addLatency(summarize(t.name, t.lat), "")
		rep.addFigure(t.system+" throughput", t.rate, t.unit+"/s", "")
		rep.addFigure(t.system+" errors", float64(t.errs), "", "0")
		rep.addFigure(t.system+" server CPU per "+t.one, t.cpu/float64(max(1, len(t.lat)))*1e6, "µs", "")
		rep.addFigure(t.system+" client side CPU per "+t.one+" (coffer-bench: agents or HTTP clients)", t.clientCPU/float64(max(1, len(t.lat)))*1e6, "µs", "")
		rep.addFigure(t.system+" server peak RSS", mib(t.peak), "MiB", "")
	}
	if c.warns != nil {
		rep.addFigure("Coffer agent warnings/errors logged", float64(c.warns.n.Load()), "", "0")
	}
	if len(targets) == 2 {
		rep.addFigure("throughput ratio Coffer / Vault", targets[0].rate/targets[1].rate, "x", ">= 2")
	}
	return rep, nil
}

// fetchTarget is one system under the fetch load.
type fetchTarget struct {
	system, name, unit string
	one                string // unit, singular
	pid                int
	srv                *serverProc // Coffer only
	warns              *warnCounter
	op                 func(w int) error
	close              func()

	lat       []time.Duration
	errs      int
	wall      time.Duration
	cpu       float64 // server CPU seconds under load (warmups included)
	clientCPU float64 // coffer-bench's own, same periods
	peak      uint64
	rate      float64
}

// load runs conc workers calling op until d has passed (after warmup) and
// returns the measured operations' latencies and errors.
func load(ctx context.Context, conc int, warmup, d time.Duration, op func(w int) error) (lat []time.Duration, errs int, wall time.Duration) {
	var (
		mu       sync.Mutex
		nerr     atomic.Int64
		measured atomic.Bool
		wg       sync.WaitGroup
	)
	stop := make(chan struct{})
	var start time.Time
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for {
				select {
				case <-stop:
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
					return
				default:
				}
				m := measured.Load()
				t0 := time.Now()
				err := op(w)
				if !m || ctx.Err() != nil {
					continue
				}
				if err != nil {
					nerr.Add(1)
					continue
				}
				mine = append(mine, time.Since(t0))
			}
		}()
	}
	time.Sleep(warmup)
	measured.Store(true)
	start = time.Now()
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
	close(stop)
	wall = time.Since(start)
	wg.Wait()
	return lat, int(nerr.Load()), wall
}

// setupCoffer starts coffer-server and o.Agents simulated agents and
// returns the fetch operation: a container starts, its value arrives, it
// stops.
func setupCoffer(ctx context.Context, o fetchOpts, dir string) (t *fetchTarget, err error) {
	srv, err := o.startServer(ctx, dir)
	if err != nil {
		return nil, err
	}
	actx, stopAgents := context.WithCancel(ctx)
	var agents []*simAgent
	closeAll := func() {
		stopAgents()
		for _, a := range agents {
			<-a.done
		}
		srv.Stop()
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	o.logf("coffer: server %s; %d secrets, %d agents", srv.Addr, o.Secrets, o.Agents)
	if err = parallel(ctx, o.Secrets, 16, func(i int) error {
		name := fmt.Sprintf("fetch/k%d", i)
		if _, err := srv.putRandomSecret(ctx, name); err != nil {
			return err
		}
		return srv.putBinding(ctx, fmt.Sprintf("fetch-%d", i), binding{Secret: name, Selector: "fetch=" + strconv.Itoa(i), File: "value"})
	}); err != nil {
		return nil, err
	}
	en, err := enroll(ctx, srv, dir, o.Agents, 16)
	if err != nil {
		return nil, err
	}
	// Each waiter is a channel closed by the first Apply that holds the file.
	var waiters sync.Map
	onApply := func(id string, files []secret.File) {
		ok := false
		for _, f := range files {
			ok = ok || f.Name == "value" && len(f.Value) > 0
			f.Value.Zero()
		}
		if ch, found := waiters.LoadAndDelete(id); ok && found {
			close(ch.(chan struct{}))
		} else if found {
			waiters.Store(id, ch)
		}
	}
	warns := &warnCounter{}
	agents = startAgents(actx, srv, dir, en.certs, onApply, slog.New(warns))
	if err := waitConnected(ctx, agents, time.Minute); err != nil {
		return nil, err
	}
	seq := make([]int, o.Concurrency)
	op := func(w int) error {
		a := agents[w%len(agents)]
		seq[w]++
		id := fmt.Sprintf("fetch-%d-%d", w, seq[w])
		ch := make(chan struct{})
		waiters.Store(id, ch)
		a.rt.Start(container.Info{ID: id, Name: id, Labels: map[string]string{"fetch": strconv.Itoa(mrand.N(o.Secrets))}, Image: "bench/app:1", PID: 1})
		defer a.rt.Stop(id)
		select {
		case <-ch:
			return nil
		case <-time.After(10 * time.Second):
			waiters.Delete(id)
			return fmt.Errorf("container %s: no delivery after 10s", id)
		}
	}
	return &fetchTarget{
		system: "Coffer", unit: "fetches", one: "fetch", pid: srv.Pid(), srv: srv, warns: warns, op: op, close: closeAll,
		name: fmt.Sprintf("Coffer fetch: container start -> value delivered (C=%d, %d agents)", o.Concurrency, o.Agents),
	}, nil
}

func randomValue() string {
	v := make([]byte, 32)
	rand.Read(v)
	defer clear(v)
	return base64.StdEncoding.EncodeToString(v)
}
