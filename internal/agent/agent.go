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
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/container"
	"coffer/internal/deliver"
	"coffer/internal/identity"
	"coffer/internal/secret"
)

// Config configures an Agent.
type Config struct {
	Server    string // host:port of coffer-server
	CAPEM     []byte // the pinned Coffer CA
	Cert      tls.Certificate
	StateDir  string // renewed certificates are saved here
	Runtime   container.Runtime
	Deliverer deliver.Deliverer
	Logger    *slog.Logger
	// MinBackoff and MaxBackoff bound reconnection waits (defaults 200ms, 30s).
	MinBackoff, MaxBackoff time.Duration
	// OnlyLabels, if set, limits the agent to containers carrying all these
	// labels (an opt-in mode, e.g. coffer.enable=true); others are neither
	// reported nor touched. Only the container's own labels count (docker
	// run --label), never its image's.
	OnlyLabels map[string]string
	// ValueGrace is how long a received value is kept before a container's
	// desired state must refer to it (default 10s).
	ValueGrace time.Duration
}

// Agent is one host's agent.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	renew *identity.Renewer

	mu         sync.Mutex
	running    map[string]container.Info // containers the runtime runs
	targets    map[string]*target        // per container delivery state
	values     map[verKey]secret.Value   // secret versions in use
	valuesAt   map[verKey]time.Time      // when each value arrived
	refs       map[verKey]int            // references from targets' want and current
	send       chan *cofferv1.AgentMessage
	connected  bool
	client     cofferv1.AgentServiceClient
	appliedCnt uint64
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
	if cfg.ValueGrace <= 0 {
		cfg.ValueGrace = 10 * time.Second
	}
	a := &Agent{
		cfg: cfg, log: cfg.Logger,
		running:  map[string]container.Info{},
		targets:  map[string]*target{},
		values:   map[verKey]secret.Value{},
		valuesAt: map[verKey]time.Time{},
		refs:     map[verKey]int{},
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

// Run follows the runtime and the server until ctx ends. It reconnects to
// the server with exponential backoff and jitter; while the server is away,
// containers keep the values they have.
func (a *Agent) Run(ctx context.Context) error {
	events, err := a.cfg.Runtime.Watch(ctx)
	if err != nil {
		return fmt.Errorf("runtime: %w", err)
	}
	tlsCfg, err := identity.ClientTLSConfig(a.cfg.CAPEM, a.renew.GetClientCertificate)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(a.cfg.Server,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// The largest value a server accepts, and room for the rest of
		// its message; announced to the server in session.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cofferv1.AgentMaxRecv)),
	)
	if err != nil {
		return err
	}
	defer conn.Close()
	a.mu.Lock()
	a.client = cofferv1.NewAgentServiceClient(conn)
	a.mu.Unlock()
	go a.renew.Run(ctx)
	go a.followRuntime(ctx, events)
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

	backoff := a.cfg.MinBackoff
	for ctx.Err() == nil {
		start := time.Now()
		err := a.session(ctx)
		if ctx.Err() != nil {
			break
		}
		if time.Since(start) > 10*time.Second {
			backoff = a.cfg.MinBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		a.log.Warn("server stream lost; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		backoff = min(backoff*2, a.cfg.MaxBackoff)
	}
	a.mu.Lock()
	for k, v := range a.values {
		v.Zero()
		delete(a.values, k)
	}
	a.mu.Unlock()
	return nil
}

// session runs one Sync stream until it fails.
func (a *Agent) session(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := a.client.Sync(metadata.AppendToOutgoingContext(ctx,
		cofferv1.FeaturesKey, cofferv1.FeatureBatch,
		cofferv1.MaxRecvKey, strconv.Itoa(cofferv1.AgentMaxRecv)))
	if err != nil {
		return err
	}
	send := make(chan *cofferv1.AgentMessage, 1024)
	a.mu.Lock()
	a.send = send
	a.connected = true
	// Report everything the runtime runs; the server answers with the full
	// desired state of each container.
	msgs := []*cofferv1.AgentMessage{{Msg: &cofferv1.AgentMessage_Hello{Hello: &cofferv1.Hello{Version: "coffer-agent/1"}}}}
	var ids []string
	for _, info := range a.running {
		msgs = append(msgs, startedMsg(info))
		ids = append(ids, info.ID)
	}
	msgs = append(msgs, &cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Sync{Sync: &cofferv1.ContainerSync{Running: ids}}})
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.send = nil
		a.connected = false
		a.mu.Unlock()
	}()
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	a.log.Info("connected to server", "server", a.cfg.Server, "containers", len(ids))

	errc := make(chan error, 2)
	var batchAcks atomic.Bool // the server understands AppliedBatch
	go func() { errc <- a.sender(ctx, stream, send, &batchAcks) }()
	go func() {
		// The server's header says which features it has; it arrives with
		// (or before) the first message.
		if h, err := stream.Header(); err == nil && cofferv1.HasFeature(h.Get(cofferv1.FeaturesKey), cofferv1.FeatureBatch) {
			batchAcks.Store(true)
		}
		for {
			m, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			a.handle(ctx, m)
		}
	}()
	return <-errc
}

// maxAckBatch caps the acknowledgements sent in one AppliedBatch.
const maxAckBatch = 256

// sender writes queued messages to the stream. With batchAcks, the Applied
// messages queued together go as one AppliedBatch, in order.
func (a *Agent) sender(ctx context.Context, stream cofferv1.AgentService_SyncClient, send chan *cofferv1.AgentMessage, batchAcks *atomic.Bool) error {
	var next *cofferv1.AgentMessage
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
		drain:
			for len(acks) < maxAckBatch {
				select {
				case m2 := <-send:
					if a2 := m2.GetApplied(); a2 != nil {
						acks = append(acks, a2)
					} else {
						next = m2
						break drain
					}
				default:
					break drain
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
	}}}}
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
