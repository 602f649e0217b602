package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"coffer/internal/secret"
)

// reconnectOpts are the reconnect mode's knobs.
type reconnectOpts struct {
	common
	Agents     int
	Containers int // per agent
	Down       time.Duration
	EnrollConc int
	Timeout    time.Duration
	Sample     time.Duration
}

func reconnectCmd(ctx context.Context) *cobra.Command {
	o := reconnectOpts{}
	cmd := &cobra.Command{
		Use:   "reconnect",
		Short: "Server restart: time until every simulated agent is back and a rotation reached every container, and the server's CPU during the wave",
		Example: `  coffer-bench reconnect                               # 1,000 agents x 10 containers, server down 20 s
  coffer-bench reconnect --agents 200 --containers 2 --down 5s`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			rep, err := runReconnect(ctx, o)
			if err != nil {
				return err
			}
			return o.finish(rep)
		},
	}
	o.flags(cmd, "reconnect.png")
	f := cmd.Flags()
	f.IntVar(&o.Agents, "agents", 1000, "simulated agents")
	f.IntVar(&o.Containers, "containers", 10, "simulated containers per agent")
	f.DurationVar(&o.Down, "down", 20*time.Second, "how long the server stays stopped")
	f.IntVar(&o.EnrollConc, "enroll-concurrency", 32, "agents enrolling at once")
	f.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "longest wait for one phase")
	f.DurationVar(&o.Sample, "cpu-sample", 100*time.Millisecond, "interval of the server CPU samples during the wave")
	return cmd
}

// runReconnect starts a server and o.Agents simulated agents (the real
// agent code), delivers to every container, stops the server (SIGTERM) for
// o.Down, starts it again on the same data dir and address, rotates the
// secret every container holds as soon as the server answers, and measures
// how long until every agent is connected again and every container holds
// the new version, with the server's CPU over the wave.
func runReconnect(ctx context.Context, o reconnectOpts) (*Report, error) {
	if o.ProfileServer != "" || o.NativeGRPC {
		return nil, errors.New("reconnect: --profile-server and --native-grpc are not supported in this mode")
	}
	rep := newReport("reconnect", map[string]any{
		"agents": o.Agents, "containers_per_agent": o.Containers, "down": o.Down.String(),
	})
	dir, cleanup, err := o.workDir()
	if err != nil {
		return nil, err
	}
	defer cleanup()
	bin := o.bin("coffer-server")
	srv, err := startServer(ctx, bin, dir, o.ServerEnv)
	if err != nil {
		return nil, err
	}
	defer func() { srv.Stop() }()
	total := o.Agents * o.Containers
	o.logf("server %s (pid %d); %d agents x %d containers", srv.Addr, srv.Pid(), o.Agents, o.Containers)

	if _, err := srv.putRandomSecret(ctx, sharedSecret); err != nil {
		return nil, err
	}
	if err := srv.putBinding(ctx, sharedBinding, binding{Secret: sharedSecret, Selector: "coffer-bench=1", File: sharedFile}); err != nil {
		return nil, err
	}
	en, err := enroll(ctx, srv, dir, o.Agents, o.EnrollConc)
	if err != nil {
		return nil, err
	}
	o.logf("enrolled %d agents in %s", o.Agents, en.wall.Round(time.Millisecond))
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
	version := uint64(1)
	has := func(v uint64) func([]secret.File) bool {
		return func(fs []secret.File) bool { f, ok := fileOf(fs, sharedFile); return ok && f.Version == v }
	}
	e := rec.expect(0, total, has(version))
	for a := range o.Agents {
		for c := range o.Containers {
			agents[a].rt.Start(simInfo(a*o.Containers+c, total))
		}
	}
	if err := e.wait(ctx, o.Timeout); err != nil {
		return nil, fmt.Errorf("initial delivery: %w", err)
	}
	o.logf("initial delivery to %d containers done", total)
	time.Sleep(time.Second)

	// Down.
	stopped := time.Now()
	srv.Stop()
	o.logf("server stopped in %s; down for %s", time.Since(stopped).Round(time.Millisecond), o.Down)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(o.Down - time.Since(stopped)):
	}
	down := 0
	for _, a := range agents {
		if !a.ag.Stats().Connected {
			down++
		}
	}
	rep.addFigure("agents without a server while it was down", float64(down), "", fmt.Sprint(o.Agents))

	// Up again, same data dir and address.
	started := time.Now()
	srv, err = startServerAt(ctx, bin, dir, srv.Addr, "server-restart.log", o.ServerEnv)
	if err != nil {
		return nil, fmt.Errorf("restart: %w", err)
	}
	listening := time.Now()
	u0, _ := usageOf(srv.Pid())
	self0, _ := usageOf(os.Getpid())
	o.logf("server restarted (pid %d), listening after %s", srv.Pid(), listening.Sub(started).Round(time.Millisecond))

	// CPU samples over the wave.
	type sample struct {
		at  time.Time
		cpu float64
	}
	samples := []sample{{listening, u0.CPUSeconds}}
	sctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(o.Sample)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case now := <-t.C:
				if u, err := usageOf(srv.Pid()); err == nil {
					samples = append(samples, sample{now, u.CPUSeconds})
				}
			}
		}
	}()

	// Agents back: the time each is first seen connected (polled every 5 ms).
	backAt := make([]time.Duration, len(agents))
	connectedDone := make(chan error, 1)
	go func() {
		left := len(agents)
		for i := range backAt {
			backAt[i] = -1
		}
		deadline := time.Now().Add(o.Timeout)
		for left > 0 {
			now := time.Now()
			for i, a := range agents {
				if backAt[i] < 0 && a.ag.Stats().Connected {
					backAt[i] = now.Sub(listening)
					left--
				}
			}
			if now.After(deadline) {
				connectedDone <- fmt.Errorf("%d of %d agents not back after %s", left, len(agents), o.Timeout)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		connectedDone <- nil
	}()

	// The rotation, as soon as the API answers.
	want := version + 1
	e = rec.expect(0, total, has(want))
	var putErr error
	for try := 0; ; try++ {
		var v uint64
		if v, putErr = srv.putRandomSecret(ctx, sharedSecret); putErr == nil {
			if v != want {
				return nil, fmt.Errorf("server made version %d, want %d", v, want)
			}
			break
		}
		if try == 50 {
			return nil, fmt.Errorf("rotation after restart: %w", putErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	putDone := time.Now()
	if err := e.wait(ctx, o.Timeout); err != nil {
		return nil, fmt.Errorf("rotation after restart: %w", err)
	}
	converged := time.Now()
	if err := <-connectedDone; err != nil {
		return nil, err
	}
	// A second after convergence, for the acknowledgements and audit the
	// wave leaves behind.
	time.Sleep(time.Second)
	stopSampling()
	<-sampled
	u1, _ := usageOf(srv.Pid())
	self1, _ := usageOf(os.Getpid())

	lat := make([]time.Duration, 0, len(backAt))
	for _, d := range backAt {
		lat = append(lat, max(d, 0))
	}
	rep.addLatency(summarize("server listening -> agent connected", lat), "every agent <= 2000 ms")
	conv, _ := e.since(listening, nil)
	rep.addLatency(summarize(fmt.Sprintf("server listening -> rotated value in container (%d)", total), conv), "")
	rep.addFigure("server restart: exec -> listening", listening.Sub(started).Seconds()*1000, "ms", "")
	rep.addFigure("server listening -> rotation PUT returned", putDone.Sub(listening).Seconds()*1000, "ms", "")
	rep.addFigure("server listening -> every agent back and every container converged", converged.Sub(listening).Seconds()*1000, "ms", "<= 2000 ms")
	wave := converged.Sub(listening).Seconds() + 1
	rep.addFigure("server CPU over the wave (listening -> converged + 1 s)", u1.CPUSeconds-u0.CPUSeconds, "s", "")
	rep.addFigure("server CPU over the wave, mean", (u1.CPUSeconds-u0.CPUSeconds)/wave, "cores", "")
	peak := 0.0
	for i := 1; i < len(samples); i++ {
		if dt := samples[i].at.Sub(samples[i-1].at).Seconds(); dt > 0 {
			peak = max(peak, (samples[i].cpu-samples[i-1].cpu)/dt)
		}
	}
	rep.addFigure(fmt.Sprintf("server CPU over the wave, busiest %s", o.Sample), peak, "cores", "")
	// The simulated agents share this process: on a small machine their
	// own TLS handshakes, not the server, can bound the wave.
	rep.addFigure("coffer-bench (all simulated agents) CPU over the wave, mean", (self1.CPUSeconds-self0.CPUSeconds)/wave, "cores", "")
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		rep.note("load average at the end of the wave: %s", strings.TrimSpace(string(la)))
	}
	if u, err := usageOf(srv.Pid()); err == nil {
		rep.addFigure("server RSS after the wave", mib(u.RSSBytes), "MiB", "")
	}
	for i := 1; i < len(samples) && samples[i-1].at.Before(converged); i++ {
		dt := samples[i].at.Sub(samples[i-1].at).Seconds()
		if dt > 0 {
			rep.note("cpu %6.0f ms: %.2f cores", samples[i].at.Sub(listening).Seconds()*1000, (samples[i].cpu-samples[i-1].cpu)/dt)
		}
	}

	// The server took the wave: the next rotation is as quick as usual.
	want++
	e = rec.expect(0, total, has(want))
	sent := time.Now()
	if _, err := srv.putRandomSecret(ctx, sharedSecret); err != nil {
		return nil, err
	}
	if err := e.wait(ctx, o.Timeout); err != nil {
		return nil, fmt.Errorf("rotation after the wave: %w", err)
	}
	after, _ := e.since(sent, nil)
	rep.addLatency(summarize(fmt.Sprintf("next rotation: PUT sent -> new value in container (%d)", total), after), "")
	rep.addFigure("agent warnings logged", float64(warns.n.Load()), "", "")
	// Sessions after the restart that resumed a TLS session (a ticket of
	// the server before it) instead of a full mutual-TLS handshake.
	var resumed uint64
	for _, a := range agents {
		resumed += a.ag.Stats().Resumed
	}
	rep.addFigure("agent sessions that resumed TLS (all agents, after the first session)", float64(resumed), "", fmt.Sprint(o.Agents))
	o.logf("back and converged %s after the server listened", converged.Sub(listening).Round(time.Millisecond))
	return rep, nil
}
