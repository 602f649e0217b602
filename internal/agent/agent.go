// Package agent is coffer-agent's reconcile loop: it follows the container
// runtime, reports containers to the server over one mTLS gRPC stream, and
// makes each container hold exactly the files the server says it must,
// through a Deliverer. Values live only in this process's memory.
package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/container"
	"coffer/internal/deliver"
	"coffer/internal/identity"
)

// Config configures an Agent.
type Config struct {
	// Server is coffer-server's address, host:port, or several separated by
	// commas (see ParseServers). All of them share one CA and one state dir.
	Server    string
	CAPEM     []byte // the pinned Coffer CA
	Cert      tls.Certificate
	StateDir  string // renewed certificates are saved here
	Runtime   container.Runtime
	Deliverer deliver.Deliverer
	Logger    *slog.Logger
	// MinBackoff and MaxBackoff bound reconnection waits (defaults 200ms,
	// 30s). FastMaxBackoff (default 1s) caps them while no server can be
	// reached at all (connection refused, no route, no answer): such a try
	// costs a server nothing, and the agent is back within about 1 s of a
	// server's return. MaxBackoff applies once a server answered and
	// refused, or keeps dropping the agent soon after accepting it.
	MinBackoff, FastMaxBackoff, MaxBackoff time.Duration
	// Resolver resolves server host names (default net.DefaultResolver).
	Resolver Resolver
	// OnlyLabels, if set, limits the agent to containers carrying all these
	// labels (an opt-in mode, e.g. coffer.enable=true); others are neither
	// reported nor touched. Only the container's own labels count (docker
	// run --label), never its image's.
	OnlyLabels map[string]string
	// ValueGrace is how long a received value is kept before a container's
	// desired state must refer to it (default 10s).
	ValueGrace time.Duration
	// ExecState, if set, reads coffer exec's record in each container, so
	// acknowledgements tell which version its process runs with (see
	// process.go); nil: not reported.
	ExecState ExecStateReader
}

// Agent is one host's agent.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	renew *identity.Renewer

	mu         sync.Mutex
	running    map[string]container.Info // containers the runtime runs
	targets    map[string]*target        // per container delivery state
	values     map[verKey]*valueEntry    // secret versions received or referred to (apply.go)
	send       chan *cofferv1.AgentMessage
	connected  bool
	server     string // the address of the current session
	client     cofferv1.AgentServiceClient
	appliedCnt uint64
	sessionN   uint64 // counts streams: a state is acknowledged again only on its own (process.go)
	resumedCnt uint64 // sessions that resumed a TLS session
	// busyN counts the targets a worker serves (changed under mu), and a
	// batch while it is handed to workers (see handle); quiet receives a
	// token when it drops to 0 (see sender).
	busyN   atomic.Int64
	quiet   chan struct{}
	ackWait time.Duration // ackWait; tests change it
	// ackHold is when the hold on acknowledgements a server asked for ends
	// (unix nanoseconds; see setAckHold).
	ackHold atomic.Int64
	workers *workers // goroutines that run work (workers.go)
}

type verKey struct {
	secret  string
	version uint64
}

// target is one container's delivery state.
type target struct {
	info    container.Info
	want    *cofferv1.Desired // newest desired state not yet applied
	current *cofferv1.Desired // state being applied or last applied
	held    map[string]verKey // by file: what the last successful Apply wrote (rotation contracts compare with it)
	proc    procState         // its process's state (process.go)
	busy    bool
	gone    bool
}

// New makes an Agent.
func New(cfg Config) *Agent {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.FastMaxBackoff <= 0 {
		cfg.FastMaxBackoff = time.Second
	}
	cfg.FastMaxBackoff = min(max(cfg.FastMaxBackoff, cfg.MinBackoff), cfg.MaxBackoff)
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.ValueGrace <= 0 {
		cfg.ValueGrace = 10 * time.Second
	}
	a := &Agent{
		cfg: cfg, log: cfg.Logger,
		running: map[string]container.Info{},
		targets: map[string]*target{},
		values:  map[verKey]*valueEntry{},
		quiet:   make(chan struct{}, 1),
		ackWait: ackWait,
		workers: newWorkers(),
	}
	a.renew = identity.NewRenewer(cfg.Cert, a.renewCert, identity.RenewerOptions{Dir: cfg.StateDir, Logger: cfg.Logger})
	return a
}

func (a *Agent) renewCert(ctx context.Context, _ *ecdsa.PrivateKey, csr []byte) ([]byte, error) {
	a.mu.Lock()
	cl := a.client
	a.mu.Unlock()
	if cl == nil {
		return nil, errors.New("not connected")
	}
	resp, err := cl.Renew(ctx, &cofferv1.RenewRequest{Csr: csr})
	if err != nil {
		return nil, err
	}
	return resp.GetCertificate(), nil
}

// Run follows the runtime and the servers until ctx ends. It starts at a
// random server of the list and, when a session ends, fails over to the
// next one, with backoff and jitter between rounds (see Config); while no
// server is reachable, containers keep the values they have. Each new
// session reports every container, and the server answers with their full
// desired state.
func (a *Agent) Run(ctx context.Context) error {
	servers, err := ParseServers(a.cfg.Server)
	if err != nil {
		return err
	}
	tlsCfg, err := identity.ClientTLSConfig(a.cfg.CAPEM, a.renew.GetClientCertificate)
	if err != nil {
		return err
	}
	tlsCfg.ClientSessionCache = newSessionCache(a.renew.Leaf) // resume.go
	events, err := a.cfg.Runtime.Watch(ctx)
	if err != nil {
		return fmt.Errorf("runtime: %w", err)
	}
	go a.renew.Run(ctx)
	go a.followRuntime(ctx, events)
	go a.watchProcesses(ctx)
	go func() {
		t := time.NewTicker(a.cfg.ValueGrace)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				a.mu.Lock()
				a.gcLocked()
				a.mu.Unlock()
			}
		}
	}()

	list := newServerList(servers, a.cfg.Resolver)
	bo := backoff{min: a.cfg.MinBackoff, fastMax: a.cfg.FastMaxBackoff, max: a.cfg.MaxBackoff}
	var warned time.Time // the last warning of this outage
	for ctx.Err() == nil {
		ran, cheap, err := a.round(ctx, list, tlsCfg, &bo)
		if ctx.Err() != nil {
			break
		}
		wait := bo.next(cheap)
		// One warning when a session ends, then one every outageWarn while
		// no server takes the agent: not one per round.
		if ran || time.Since(warned) >= outageWarn {
			warned = time.Now()
			a.log.Warn("no server stream; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		} else {
			a.log.Debug("no server stream; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	a.mu.Lock()
	for k, e := range a.values {
		a.dropValueLocked(k, e)
	}
	a.mu.Unlock()
	return nil
}

// outageWarn is how often the agent warns while no server takes it.
const outageWarn = 30 * time.Second

// longSession is how long a session must have lasted for its end to reset
// the backoff: a server that accepts and soon drops agents is not hammered.
const longSession = 10 * time.Second

// round tries the servers of one round in turn until a session runs, and
// returns when it ends (ran) or when every server failed. cheap reports
// whether the next try may come soon: no server could be reached at all,
// or a long session ended.
func (a *Agent) round(ctx context.Context, list *serverList, tlsCfg *tls.Config, bo *backoff) (ran, cheap bool, err error) {
	targets, err := list.round(ctx)
	if err != nil {
		return false, cheapFailure(err), err
	}
	cheap = true
	var errs []error
	for _, t := range targets {
		start := time.Now()
		established, err := a.session(ctx, tlsCfg, t)
		if ctx.Err() != nil {
			return established, true, err
		}
		if established {
			list.connected(t)
			if time.Since(start) >= longSession {
				bo.reset()
				return true, true, err
			}
			return true, false, err
		}
		a.log.Debug("server unreachable", "server", t.addr, "err", err)
		errs = append(errs, err)
		if !cheapFailure(err) {
			cheap = false
		}
	}
	return false, cheap, errors.Join(errs...)
}

// dialTimeout bounds one TCP connect and TLS handshake.
const dialTimeout = 5 * time.Second

// session runs one Sync stream to t until it fails. established reports
// whether the server accepted the stream (it sent its header).
func (a *Agent) session(ctx context.Context, tlsCfg *tls.Config, t dialTarget) (established bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if t.serverName != "" {
		tlsCfg = tlsCfg.Clone()
		tlsCfg.ServerName = t.serverName
	}
	// The dial error is kept: gRPC reports it only as text, and the backoff
	// needs to know whether the server was reachable at all.
	var dialMu sync.Mutex
	var dialErr error
	dialer := &net.Dialer{Timeout: dialTimeout}
	// One connection per session, closed when it ends: the agent, not
	// gRPC's own reconnect backoff (which grows to 2 minutes), decides
	// when and where to reconnect.
	conn, err := grpc.NewClient("passthrough:///"+t.addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, "tcp", addr)
			if err != nil {
				dialMu.Lock()
				dialErr = err
				dialMu.Unlock()
			}
			return c, err
		}),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: grpcbackoff.DefaultConfig, MinConnectTimeout: dialTimeout}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// Fixed HTTP/2 windows: gRPC's dynamic window would probe the
		// bandwidth with a ping after data comes in, a write each way per
		// message, for a stream that carries a few small messages at a time.
		grpc.WithInitialWindowSize(agentWindow), grpc.WithInitialConnWindowSize(agentWindow),
		// The largest value a server accepts, and room for the rest of
		// its message; announced to the server in session.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cofferv1.AgentMaxRecv)),
	)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	failed := func(err error) (bool, error) {
		dialMu.Lock()
		defer dialMu.Unlock()
		if dialErr != nil {
			return false, fmt.Errorf("%s: %w", t.addr, dialErr)
		}
		return false, fmt.Errorf("%s: %w", t.addr, err)
	}
	client := cofferv1.NewAgentServiceClient(conn)
	stream, err := client.Sync(metadata.AppendToOutgoingContext(ctx,
		cofferv1.FeaturesKey, cofferv1.FeatureBatch,
		cofferv1.MaxRecvKey, strconv.Itoa(cofferv1.AgentMaxRecv)))
	if err != nil {
		return failed(err)
	}
	send := make(chan *cofferv1.AgentMessage, 1024)
	a.mu.Lock()
	a.send = send
	a.sessionN++
	a.ackHold.Store(0) // a hold another server asked for is not this one's
	// Report everything the runtime runs; the server answers with the full
	// desired state of each container.
	msgs := []*cofferv1.AgentMessage{{Msg: &cofferv1.AgentMessage_Hello{Hello: &cofferv1.Hello{Version: "coffer-agent/1"}}}}
	var ids []string
	for _, info := range a.running {
		m := startedMsg(info)
		m.GetStarted().Container.Held = heldRefs(a.targets[info.ID]) // none pins survive a new server
		msgs = append(msgs, m)
		ids = append(ids, info.ID)
	}
	msgs = append(msgs, &cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Sync{Sync: &cofferv1.ContainerSync{Running: ids}}})
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.send = nil
		a.connected = false
		a.server = ""
		a.client = nil
		a.mu.Unlock()
	}()
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			return failed(err)
		}
	}
	// The server sends its header, with the features it has, as soon as
	// it accepted the agent.
	h, err := stream.Header()
	if err != nil {
		return failed(err)
	}
	var batchAcks atomic.Bool // the server understands AppliedBatch
	batchAcks.Store(cofferv1.HasFeature(h.Get(cofferv1.FeaturesKey), cofferv1.FeatureBatch))
	resumed := false
	if p, ok := peer.FromContext(stream.Context()); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			resumed = ti.State.DidResume
		}
	}
	a.mu.Lock()
	a.connected = true
	a.server = t.addr
	a.client = client
	if resumed {
		a.resumedCnt++
	}
	a.mu.Unlock()
	a.log.Info("connected to server", "server", t.addr, "containers", len(ids), "tls_resumed", resumed)

	errc := make(chan error, 2)
	go func() { errc <- a.sender(ctx, stream, send, &batchAcks) }()
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			a.handle(ctx, m)
		}
	}()
	return true, <-errc
}

// agentWindow is the HTTP/2 flow-control window the agent gives the
// server: a message's values travel in chunks of up to 1 MiB.
const agentWindow = 1 << 20

// maxAckBatch caps the acknowledgements sent in one AppliedBatch.
const maxAckBatch = 256

// ackWait bounds how long an acknowledgement waits for those of the
// deliveries still under way, to go with them in one AppliedBatch.
const ackWait = 20 * time.Millisecond

// sender writes queued messages to the stream. With batchAcks, the Applied
// messages queued together go as one AppliedBatch, in order; while other
// containers' deliveries are under way (a rotation reaches all of an
// agent's containers at once), an acknowledgement waits for theirs (up to
// ackWait): one message for the server to read instead of one each.
func (a *Agent) sender(ctx context.Context, stream cofferv1.AgentService_SyncClient, send chan *cofferv1.AgentMessage, batchAcks *atomic.Bool) error {
	var next *cofferv1.AgentMessage
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		m := next
		next = nil
		if m == nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case m = <-send:
			}
		}
		if ack := m.GetApplied(); ack != nil && batchAcks.Load() {
			acks := []*cofferv1.Applied{ack}
			var waitEnd time.Time
		collect:
			for len(acks) < maxAckBatch {
				var m2 *cofferv1.AgentMessage
				select {
				case m2 = <-send:
				default:
					// Nothing queued: wait only while deliveries are
					// under way.
					if a.busyN.Load() == 0 {
						break collect
					}
					now := time.Now()
					if waitEnd.IsZero() {
						waitEnd = now.Add(a.ackWait)
					}
					wait := waitEnd.Sub(now)
					if wait <= 0 {
						break collect
					}
					// Go 1.23 timers: after Stop or Reset, no stale
					// tick is received.
					linger.Reset(wait)
					select {
					case m2 = <-send:
					case <-a.quiet: // none under way any more: look again
					case <-linger.C:
						break collect
					case <-ctx.Done():
						linger.Stop()
						return ctx.Err()
					}
					linger.Stop()
					if m2 == nil {
						continue
					}
				}
				if a2 := m2.GetApplied(); a2 != nil {
					acks = append(acks, a2)
				} else {
					next = m2
					break collect
				}
			}
			if next == nil && len(acks) < maxAckBatch {
				var err error
				if acks, next, err = a.holdAcks(ctx, send, acks, linger); err != nil {
					return err
				}
			}
			if len(acks) > 1 {
				m = &cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_AppliedBatch{AppliedBatch: &cofferv1.AppliedBatch{Applied: acks}}}
			}
		}
		if err := stream.Send(m); err != nil {
			return err
		}
	}
}

// maxAckHold caps how long acknowledgements are held back at a server's
// asking (Batch.ack_hold_ms), whatever it asks.
const maxAckHold = time.Second

// setAckHold notes a server's asking, in a batch received now, that the
// acknowledgements wait up to ms milliseconds: the server is sending the
// same change to many agents and reads acknowledgements best after its
// sends. The latest end asked for wins, within maxAckHold of now.
func (a *Agent) setAckHold(ms uint32) {
	if ms == 0 {
		return
	}
	until := time.Now().Add(min(time.Duration(ms)*time.Millisecond, maxAckHold)).UnixNano()
	for {
		cur := a.ackHold.Load()
		if cur >= until || a.ackHold.CompareAndSwap(cur, until) {
			return
		}
	}
}

// holdAcks keeps acks, and those queued after them, until the end of the
// hold the server asked for (setAckHold), if one is under way; then each
// says how long it was held (held_ms, which the server takes off its
// delivery latency). Any other message ends the hold at once, to go after
// them (next): the order of what the agent says is kept. So does a full
// batch.
func (a *Agent) holdAcks(ctx context.Context, send chan *cofferv1.AgentMessage, acks []*cofferv1.Applied, linger *time.Timer) (_ []*cofferv1.Applied, next *cofferv1.AgentMessage, _ error) {
	wait := time.Until(time.Unix(0, a.ackHold.Load()))
	if wait <= 0 {
		return acks, nil, nil
	}
	start := time.Now()
	since := make([]time.Time, len(acks))
	for i := range since {
		since[i] = start
	}
	linger.Reset(wait)
hold:
	for len(acks) < maxAckBatch {
		select {
		case m := <-send:
			ack := m.GetApplied()
			if ack == nil {
				next = m
				break hold
			}
			acks, since = append(acks, ack), append(since, time.Now())
		case <-linger.C:
			break hold
		case <-ctx.Done():
			linger.Stop()
			return nil, nil, ctx.Err()
		}
	}
	linger.Stop()
	now := time.Now()
	for i, ack := range acks {
		ack.HeldMs = uint32(now.Sub(since[i]).Milliseconds())
	}
	return acks, next, nil
}

// enqueue sends m on the current stream, if any. Messages for a stream that
// is gone are dropped: the next stream starts with a full report.
func (a *Agent) enqueueLocked(m *cofferv1.AgentMessage) {
	if a.send == nil {
		return
	}
	select {
	case a.send <- m:
	default:
		// The stream is stuck; drop it rather than block. The reconnect
		// resends everything.
		a.log.Warn("send queue full; dropping message")
	}
}

// startedMsg reports a container: its own labels and its image's labels
// apart (the server lets selectors see the image's only under
// "image.label/").
func startedMsg(info container.Info) *cofferv1.AgentMessage {
	return &cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Started{Started: &cofferv1.ContainerStarted{Container: &cofferv1.Container{
		Id: info.ID, Name: info.Name, Labels: info.Labels, ImageLabels: info.ImageLabels, Image: info.Image, ImageDigest: info.ImageDigest,
		Pod: podMsg(info.Pod),
	}}}}
}

func podMsg(p *container.Pod) *cofferv1.Pod {
	if p == nil {
		return nil
	}
	return &cofferv1.Pod{Uid: p.UID, Namespace: p.Namespace, Name: p.Name, Container: p.Container}
}

// followRuntime mirrors runtime events into the agent's state and the stream.
func (a *Agent) followRuntime(ctx context.Context, events <-chan container.Event) {
	for ev := range events {
		switch ev.Kind {
		case container.Started:
			if !a.serves(ev.Info) {
				continue
			}
			a.mu.Lock()
			a.running[ev.Info.ID] = ev.Info
			if t := a.targets[ev.Info.ID]; t != nil {
				t.info = ev.Info
				a.kickLocked(ctx, t) // its state may have waited for a pid
			}
			a.enqueueLocked(startedMsg(ev.Info))
			a.mu.Unlock()
		case container.Stopped:
			a.stopped(ctx, ev.Info.ID)
		case container.Synced:
			keep := map[string]bool{}
			for _, id := range ev.Running {
				keep[id] = true
			}
			a.mu.Lock()
			var gone, served []string
			for id := range a.running {
				if keep[id] {
					served = append(served, id)
				} else {
					gone = append(gone, id)
				}
			}
			a.enqueueLocked(&cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Sync{Sync: &cofferv1.ContainerSync{Running: served}}})
			a.mu.Unlock()
			for _, id := range gone {
				a.stopped(ctx, id)
			}
		}
	}
}

// serves reports whether the agent looks after container c. Only the
// container's own labels count: an image's author cannot opt containers in.
func (a *Agent) serves(c container.Info) bool {
	for k, v := range a.cfg.OnlyLabels {
		if got, ok := c.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// stopped forgets a container: its secrets leave this process's memory.
func (a *Agent) stopped(ctx context.Context, id string) {
	a.mu.Lock()
	info, ok := a.running[id]
	if !ok {
		info = container.Info{ID: id}
	}
	delete(a.running, id)
	if t := a.targets[id]; t != nil {
		t.gone = true
		a.setWantLocked(t, nil)
		if !t.busy {
			a.dropTargetLocked(t)
		}
	}
	a.enqueueLocked(&cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Stopped{Stopped: &cofferv1.ContainerStopped{Id: id}}})
	a.mu.Unlock()
	if err := a.cfg.Deliverer.Release(ctx, info); err != nil {
		a.log.Warn("release failed", "container", info.Name, "id", id, "err", err)
	}
}
