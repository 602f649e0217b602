package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
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
N applications would; both servers run on this machine, one after the other.`,
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
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "measured time per system")
	f.DurationVar(&o.Warmup, "warmup", time.Second, "unmeasured time before each measurement")
	f.StringVar(&o.Vault, "vault", "", "vault binary: also measure a Vault dev server's KV v2 reads")
	f.BoolVar(&o.VaultAudit, "vault-audit", false, "enable a file audit device in Vault (Coffer always audits deliveries)")
	return cmd
}

func runFetch(ctx context.Context, o fetchOpts) (*Report, error) {
	if o.Agents <= 0 {
		o.Agents = o.Concurrency
	}
	rep := newReport("fetch", map[string]any{
		"agents": o.Agents, "concurrency": o.Concurrency, "secrets": o.Secrets,
		"duration": o.Duration.String(), "vault": o.Vault != "", "vault_audit": o.VaultAudit,
	})
	dir, cleanup, err := o.workDir()
	if err != nil {
		return nil, err
	}
	defer cleanup()
	cRate, err := fetchCoffer(ctx, o, dir, rep)
	if err != nil {
		return nil, fmt.Errorf("coffer: %w", err)
	}
	if o.Vault == "" {
		return rep, nil
	}
	vRate, err := fetchVault(ctx, o, dir, rep)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	rep.addFigure("throughput ratio Coffer / Vault", cRate/vRate, "x", ">= 2")
	return rep, nil
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
	start := time.Now()
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

// fetchCoffer measures Coffer's fetch path; it returns fetches per second.
func fetchCoffer(ctx context.Context, o fetchOpts, dir string, rep *Report) (float64, error) {
	srv, err := o.startServer(ctx, dir)
	if err != nil {
		return 0, err
	}
	defer srv.Stop()
	o.logf("coffer: server %s; %d secrets, %d agents", srv.Addr, o.Secrets, o.Agents)
	if err := parallel(ctx, o.Secrets, 16, func(i int) error {
		name := fmt.Sprintf("fetch/k%d", i)
		if _, err := srv.putRandomSecret(ctx, name); err != nil {
			return err
		}
		return srv.putBinding(ctx, fmt.Sprintf("fetch-%d", i), binding{Secret: name, Selector: "fetch=" + strconv.Itoa(i), File: "value"})
	}); err != nil {
		return 0, err
	}
	en, err := enroll(ctx, srv, dir, o.Agents, 16)
	if err != nil {
		return 0, err
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
	actx, stopAgents := context.WithCancel(ctx)
	agents := startAgents(actx, srv, dir, en.certs, onApply, slog.New(warns))
	defer func() {
		stopAgents()
		for _, a := range agents {
			<-a.done
		}
	}()
	if err := waitConnected(ctx, agents, time.Minute); err != nil {
		return 0, err
	}
	seq := make([]int, o.Concurrency)
	stopProfile := o.profileStart(srv)
	u0, _ := usageOf(srv.Pid())
	lat, errs, wall := load(ctx, o.Concurrency, o.Warmup, o.Duration, func(w int) error {
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
	})
	u1, _ := usageOf(srv.Pid())
	stopProfile()
	rate := float64(len(lat)) / wall.Seconds()
	rep.addLatency(summarize(fmt.Sprintf("Coffer fetch: container start -> value delivered (C=%d, %d agents)", o.Concurrency, o.Agents), lat), "")
	rep.addFigure("Coffer fetch throughput", rate, "fetches/s", "")
	rep.addFigure("Coffer fetch errors", float64(errs), "", "0")
	rep.addFigure("Coffer server CPU per fetch", (u1.CPUSeconds-u0.CPUSeconds)/float64(max(1, len(lat)))*1e6, "µs", "")
	rep.addFigure("Coffer agent warnings/errors logged", float64(warns.n.Load()), "", "0")
	o.logf("coffer: %.0f fetches/s", rate)
	return rate, nil
}

func randomValue() string {
	v := make([]byte, 32)
	rand.Read(v)
	defer clear(v)
	return base64.StdEncoding.EncodeToString(v)
}
