package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"coffer/internal/secret"
)

// upstreamOpts are the upstream mode's knobs.
type upstreamOpts struct {
	common
	Vault      string
	Secrets    int
	Agents     int
	Interval   time.Duration
	HintPoll   time.Duration
	Rounds     int
	Window     time.Duration
	Timeout    time.Duration
	RoundPause time.Duration
	RPS        int
}

func upstreamCmd(ctx context.Context) *cobra.Command {
	o := upstreamOpts{}
	cmd := &cobra.Command{
		Use:   "upstream",
		Short: "Linked secrets on a real Vault: upstream change -> new value in the container, and Vault calls per minute",
		Long: `Starts a Vault dev server (TLS) and coffer-server with two upstreams on it:
"poll" checks its linked items every --interval; "hint" checks every
--hint-poll and at once on a change hint from Vault's socket audit device
(beside a file audit device). --secrets items are linked through each and
bound to as many simulated containers (each holds one file of each). Each
upstream's requests go through a counting proxy.

It measures the Vault requests per minute while nothing changes (the cost
of following --secrets linked secrets), and, over --rounds writes of a
random item in Vault, the time from the write returning to the new value
applied in its container.`,
		Example: `  coffer-bench upstream --vault /var/cache/coffer-tools/vault-v1.21.1/vault
  coffer-bench upstream --vault ./vault --secrets 100 --rounds 3 --window 10s`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if o.Vault == "" {
				return fmt.Errorf("--vault BINARY is required (scripts/test-tools.sh builds one into /var/cache/coffer-tools)")
			}
			rep, err := runUpstream(ctx, o)
			if err != nil {
				return err
			}
			return o.finish(rep)
		},
	}
	o.flags(cmd, "upstream.png")
	f := cmd.Flags()
	f.StringVar(&o.Vault, "vault", "", "vault binary")
	f.IntVar(&o.Secrets, "secrets", 1000, "linked secrets per upstream (and simulated containers)")
	f.IntVar(&o.Agents, "agents", 10, "simulated agents the containers are spread over")
	f.DurationVar(&o.Interval, "interval", 2*time.Second, `poll interval of the "poll" upstream`)
	f.DurationVar(&o.HintPoll, "hint-poll", time.Minute, `poll interval of the "hint" upstream (a safety net behind the hints)`)
	f.IntVar(&o.Rounds, "rounds", 10, "writes in Vault measured per upstream")
	f.DurationVar(&o.Window, "window", time.Minute, "idle time over which Vault requests are counted (at least --hint-poll for a fair count)")
	f.DurationVar(&o.Timeout, "timeout", time.Minute, "longest wait for one round")
	f.DurationVar(&o.RoundPause, "pause", 300*time.Millisecond, "pause between rounds")
	f.IntVar(&o.RPS, "max-rps", 2000, "max_requests_per_second of both upstreams (the default of 200 would stretch a check of 1,000 items to 5 s)")
	return cmd
}

// countingProxy forwards to Vault and counts requests by kind.
type countingProxy struct {
	addr                  string
	metadata, data, other atomic.Int64
	srv                   *http.Server
}

func startCountingProxy(target string, ca []byte) (*countingProxy, error) {
	u, err := url.Parse("https://" + target)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 64, ForceAttemptHTTP2: true}
	rp.ErrorLog = log.New(io.Discard, "", 0) // cancelled requests at shutdown
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &countingProxy{addr: ln.Addr().String()}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.URL.Path, "/metadata/"):
			p.metadata.Add(1)
		case strings.Contains(r.URL.Path, "/data/"):
			p.data.Add(1)
		default:
			p.other.Add(1)
		}
		rp.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln)
	return p, nil
}

func (p *countingProxy) total() int64 { return p.metadata.Load() + p.data.Load() + p.other.Load() }

// runUpstream measures linked secrets on a real Vault.
func runUpstream(ctx context.Context, o upstreamOpts) (*Report, error) {
	rep := newReport("upstream", map[string]any{
		"secrets_per_upstream": o.Secrets, "agents": o.Agents, "poll_interval": o.Interval.String(),
		"hint_poll_interval": o.HintPoll.String(), "rounds": o.Rounds, "window": o.Window.String(), "max_requests_per_second": o.RPS,
	})
	dir, cleanup, err := o.workDir()
	if err != nil {
		return nil, err
	}
	defer cleanup()
	v, err := startVault(ctx, o.Vault, dir)
	if err != nil {
		return nil, err
	}
	defer v.Stop()
	hc := v.client()
	for _, kind := range []string{"p", "h"} {
		if err := parallel(ctx, o.Secrets, 16, func(i int) error {
			return v.call(ctx, hc, "PUT", fmt.Sprintf("/v1/secret/data/bench/%s%d", kind, i), map[string]any{"data": map[string]string{"value": randomValue()}})
		}); err != nil {
			return nil, fmt.Errorf("vault setup: %w", err)
		}
	}
	proxies := map[string]*countingProxy{}
	for _, up := range []string{"poll", "hint"} {
		if proxies[up], err = startCountingProxy(v.addr, v.ca); err != nil {
			return nil, err
		}
		defer proxies[up].srv.Close()
	}
	hintAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	tokenFile := filepath.Join(dir, "vault-token")
	if err := os.WriteFile(tokenFile, []byte("root\n"), 0o600); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "coffer.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`keystores:
  poll:
    type: vault
    address: http://%s
    token_file: %s
    poll_interval: %s
    max_requests_per_second: %d
  hint:
    type: vault
    address: http://%s
    token_file: %s
    poll_interval: %s
    max_requests_per_second: %d
    change_hints:
      listen: %s
`, proxies["poll"].addr, tokenFile, o.Interval, o.RPS, proxies["hint"].addr, tokenFile, o.HintPoll, o.RPS, hintAddr)), 0o600); err != nil {
		return nil, err
	}
	srv, err := o.startServer(ctx, dir, "--config", cfg)
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	// Vault's socket audit device, beside a file device (alone, it would
	// wedge Vault whenever its listener is down).
	if err := v.call(ctx, hc, "PUT", "/v1/sys/audit/file", map[string]any{
		"type": "file", "options": map[string]string{"file_path": filepath.Join(dir, "vault-audit.log")},
	}); err != nil {
		return nil, err
	}
	if err := v.call(ctx, hc, "PUT", "/v1/sys/audit/coffer", map[string]any{
		"type": "socket", "options": map[string]string{"address": hintAddr, "socket_type": "tcp"},
	}); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := parallel(ctx, o.Secrets, 16, func(i int) error {
		for _, l := range []struct{ up, kind string }{{"poll", "p"}, {"hint", "h"}} {
			name := fmt.Sprintf("bench/%s%d", l.kind, i)
			if err := srv.call(ctx, "PUT", "/v1/links/"+name, map[string]string{"from": fmt.Sprintf("%s:bench/%s%d", l.up, l.kind, i)}, nil); err != nil {
				return err
			}
			if err := srv.putBinding(ctx, fmt.Sprintf("bench-%s%d", l.kind, i), binding{Secret: name, Selector: fmt.Sprintf("ctr=%d", i), File: l.kind}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("link: %w", err)
	}
	rep.addFigure("setup: link + bind (16 clients)", float64(2*o.Secrets)/time.Since(t0).Seconds(), "pairs/s", "")
	o.logf("linked and bound %d secrets in %s", 2*o.Secrets, time.Since(t0).Round(time.Millisecond))

	en, err := enroll(ctx, srv, dir, o.Agents, 8)
	if err != nil {
		return nil, err
	}
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
	both := func(fs []secret.File) bool {
		_, a := fileOf(fs, "p")
		_, b := fileOf(fs, "h")
		return a && b
	}
	e := rec.expect(0, o.Secrets, both)
	for i := range o.Secrets {
		agents[i%len(agents)].rt.Start(simInfo(i, o.Secrets))
	}
	if err := e.wait(ctx, o.Timeout); err != nil {
		return nil, fmt.Errorf("initial delivery: %w", err)
	}
	o.logf("%d containers hold their two linked secrets", o.Secrets)

	// Idle cost: Vault requests per minute, nothing changing.
	time.Sleep(o.Interval) // past the first checks
	before := map[string]int64{}
	for up, p := range proxies {
		before[up] = p.total()
	}
	o.logf("counting Vault requests for %s", o.Window)
	time.Sleep(o.Window)
	perMin := func(up string) float64 {
		return float64(proxies[up].total()-before[up]) / o.Window.Minutes()
	}
	rep.addFigure(fmt.Sprintf("Vault requests/min, %d linked secrets, poll every %s", o.Secrets, o.Interval), perMin("poll"), "req/min", "")
	rep.addFigure(fmt.Sprintf("Vault requests/min, %d linked secrets, hints + poll every %s", o.Secrets, o.HintPoll), perMin("hint"), "req/min", "")

	// Rounds: one random item written in Vault; time until its container
	// has the new value.
	measure := func(kind string) ([]time.Duration, error) {
		var lat []time.Duration
		version := map[int]uint64{} // Coffer version each container holds; 1 after the link
		for r := range o.Rounds {
			i := rand.N(o.Secrets)
			want := max(version[i], 1) + 1
			version[i] = want
			e := rec.expect(i, i+1, func(fs []secret.File) bool { f, ok := fileOf(fs, kind); return ok && f.Version >= want })
			if err := v.call(ctx, hc, "PUT", fmt.Sprintf("/v1/secret/data/bench/%s%d", kind, i), map[string]any{"data": map[string]string{"value": randomValue()}}); err != nil {
				return nil, err
			}
			ret := time.Now()
			if err := e.wait(ctx, o.Timeout); err != nil {
				return nil, fmt.Errorf("%s round %d: %w", kind, r, err)
			}
			d, _ := e.since(ret, nil)
			lat = append(lat, d...)
			o.logf("%s round %d: container %d has the new value %s after the write", kind, r, i, d[0].Round(time.Millisecond))
			time.Sleep(o.RoundPause)
		}
		return lat, nil
	}
	lp, err := measure("p")
	if err != nil {
		return nil, err
	}
	lh, err := measure("h")
	if err != nil {
		return nil, err
	}
	rep.addLatency(summarize(fmt.Sprintf("Vault write -> new value in the container, poll every %s (%d rounds)", o.Interval, o.Rounds), lp),
		fmt.Sprintf("<= interval + 1 s (%s)", o.Interval+time.Second))
	rep.addLatency(summarize(fmt.Sprintf("Vault write -> new value in the container, socket audit hints (%d rounds)", o.Rounds), lh), "<= 1 s")
	rep.addFigure("agent warnings/errors logged", float64(warns.n.Load()), "", "0")
	rep.note("documented, not measured: External Secrets Operator reads each secret separately every refreshInterval (default 1h): %d reads/h (%.0f/min) for %d secrets, a change seen up to 1 h later", o.Secrets, float64(o.Secrets)/60, o.Secrets)
	rep.note("documented, not measured: the Secrets Store CSI driver, with rotation enabled (off by default), reads every mounted secret every 2 min per pod: %d reads/2 min (%.0f/min) for %d single-secret pods, a change seen up to 2 min later (or never, with rotation off)", o.Secrets, float64(o.Secrets)/2, o.Secrets)
	return rep, nil
}
