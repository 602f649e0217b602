package broker

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/audit"
)

// Service implements cofferv1.AgentServiceServer on top of a Broker.
type Service struct {
	cofferv1.UnimplementedAgentServiceServer
	b *Broker
}

// Service returns the gRPC service of the broker.
func (b *Broker) Service() *Service { return &Service{b: b} }

// authenticate returns the calling agent's name and certificate serial from
// the verified mTLS peer certificate.
func (s *Service) authenticate(ctx context.Context) (name, serial, addr string, err error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", "", "", status.Error(codes.Unauthenticated, "no peer")
	}
	addr = p.Addr.String()
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return "", "", addr, status.Error(codes.Unauthenticated, "agent certificate required")
	}
	cert := ti.State.VerifiedChains[0][0]
	name, err = s.b.cfg.Agents.Verify(cert)
	if err != nil {
		return "", "", addr, status.Error(codes.PermissionDenied, err.Error())
	}
	return name, serialOf(cert), addr, nil
}

func serialOf(c *x509.Certificate) string { return hex.EncodeToString(c.SerialNumber.Bytes()) }

// Renew implements cofferv1.AgentServiceServer.
func (s *Service) Renew(ctx context.Context, req *cofferv1.RenewRequest) (*cofferv1.RenewResponse, error) {
	name, serial, _, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	der, err := s.b.cfg.Agents.Renew(ctx, name, serial, req.GetCsr())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.b.audit(ctx, audit.Event{Actor: "agent:" + name, Action: "agent.renew", Object: "agent:" + name, Result: "ok"})
	return &cofferv1.RenewResponse{Certificate: der}, nil
}

// Sync implements cofferv1.AgentServiceServer.
func (s *Service) Sync(stream cofferv1.AgentService_SyncServer) error {
	name, _, addr, err := s.authenticate(stream.Context())
	if err != nil {
		return err
	}
	b := s.b
	// Features: the agent lists what it understands in the request
	// metadata; the server answers with what it understands.
	md, _ := metadata.FromIncomingContext(stream.Context())
	if err := stream.SendHeader(metadata.Pairs(cofferv1.FeaturesKey, cofferv1.FeatureBatch)); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	sess := newSession(name, cancel, cofferv1.HasFeature(md.Get(cofferv1.FeaturesKey), cofferv1.FeatureBatch))
	b.mu.Lock()
	if old := b.sessions[name]; old != nil {
		old.cancel() // a reconnected agent replaces its old stream
	}
	b.sessions[name] = sess
	b.mu.Unlock()
	b.cfg.Agents.Seen(name, addr)
	b.log.Info("agent connected", "agent", name, "addr", addr)
	defer func() {
		b.mu.Lock()
		if b.sessions[name] == sess {
			delete(b.sessions, name)
		}
		b.mu.Unlock()
		b.cfg.Agents.Seen(name, "")
		b.log.Info("agent disconnected", "agent", name)
	}()

	errc := make(chan error, 2)
	go func() { errc <- sess.run(ctx, stream.Send) }()
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			if err := b.handle(ctx, name, m); err != nil {
				errc <- err
				return
			}
		}
	}()
	select {
	case <-ctx.Done():
		if stream.Context().Err() == nil {
			return status.Error(codes.PermissionDenied, "agent stream closed by the server")
		}
		return ctx.Err()
	case err := <-errc:
		if errors.Is(err, context.Canceled) {
			return status.Error(codes.PermissionDenied, "agent stream closed by the server")
		}
		return err
	}
}

// handle applies one message from an agent.
func (b *Broker) handle(ctx context.Context, agent string, m *cofferv1.AgentMessage) error {
	switch msg := m.Msg.(type) {
	case *cofferv1.AgentMessage_Hello:
		return nil
	case *cofferv1.AgentMessage_Started:
		c := msg.Started.GetContainer()
		if c.GetId() == "" {
			return status.Error(codes.InvalidArgument, "container without id")
		}
		b.started(agent, c)
	case *cofferv1.AgentMessage_Stopped:
		b.stopped(ctx, agent, msg.Stopped.GetId())
	case *cofferv1.AgentMessage_Sync:
		running := map[string]bool{}
		for _, id := range msg.Sync.GetRunning() {
			running[id] = true
		}
		b.mu.Lock()
		var gone []string
		for id, c := range b.containers {
			if c.agent == agent && !running[id] {
				gone = append(gone, id)
			}
		}
		b.mu.Unlock()
		for _, id := range gone {
			b.stopped(ctx, agent, id)
		}
	case *cofferv1.AgentMessage_Applied:
		return b.applied(ctx, agent, msg.Applied)
	case *cofferv1.AgentMessage_AppliedBatch:
		for _, a := range msg.AppliedBatch.GetApplied() {
			if err := b.applied(ctx, agent, a); err != nil {
				return err
			}
		}
	default:
		return status.Error(codes.InvalidArgument, "unknown message")
	}
	return nil
}

func (b *Broker) started(agent string, info *cofferv1.Container) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.containers[info.Id]
	if c == nil || c.agent != agent {
		if c != nil {
			b.dropLocked(info.Id)
		}
		c = &ctr{agent: agent}
		b.containers[info.Id] = c
	}
	c.info = info
	c.gen = 0 // a (re)started or re-reported container gets its full state again
	b.regrant(c, b.cfg.Catalog.Bindings())
	b.push(c)
}

func (b *Broker) stopped(ctx context.Context, agent, id string) {
	b.mu.Lock()
	c := b.containers[id]
	if c == nil || c.agent != agent {
		b.mu.Unlock()
		return
	}
	b.dropLocked(id)
	b.mu.Unlock()
	for _, f := range c.applied {
		b.auditLater(id, deliveryEvent(agent, c.info, "delivery.remove", f))
	}
}

func (b *Broker) applied(ctx context.Context, agent string, a *cofferv1.Applied) error {
	b.mu.Lock()
	c := b.containers[a.GetContainerId()]
	if c == nil || c.agent != agent || a.GetGeneration() != c.gen {
		b.mu.Unlock()
		return nil // stale ack: a newer state is on its way
	}
	info := c.info
	if a.GetError() != "" {
		b.mu.Unlock()
		b.log.Warn("delivery failed", "agent", agent, "container", info.Name, "id", info.Id, "err", a.GetError())
		ev := audit.Event{Actor: "agent:" + agent, Action: "delivery.apply", Object: "container:" + info.Id, Result: "error",
			Details: map[string]string{"container": info.Name, "error": a.GetError(), "image_digest": info.ImageDigest}}
		b.auditLater(info.Id, ev)
		return nil
	}
	before := c.applied
	c.applied = c.desired
	c.ackGen = c.gen
	after := c.applied
	sentAt := c.sentAt
	b.mu.Unlock()
	deliveryLatency.Observe(time.Since(sentAt).Seconds())

	old := map[string]*cofferv1.FileRef{}
	for _, f := range before {
		old[f.File] = f
	}
	for _, f := range after {
		p, had := old[f.File]
		delete(old, f.File)
		switch {
		case !had:
			b.auditLater(info.Id, deliveryEvent(agent, info, "delivery.apply", f))
		case p.Secret != f.Secret || p.Version != f.Version:
			b.auditLater(info.Id, deliveryEvent(agent, info, "delivery.rotate", f))
		}
	}
	for _, f := range old {
		b.auditLater(info.Id, deliveryEvent(agent, info, "delivery.revoke", f))
	}
	return nil
}

func deliveryEvent(agent string, info *cofferv1.Container, action string, f *cofferv1.FileRef) audit.Event {
	deliveries.WithLabelValues(action).Inc()
	return audit.Event{
		Actor: "agent:" + agent, Action: action, Object: "secret:" + f.Secret, Result: "ok",
		Details: map[string]string{
			"secret": f.Secret, "version": fmt.Sprint(f.Version), "file": f.File,
			"container_id": info.Id, "container": info.Name, "image": info.Image, "image_digest": info.ImageDigest,
			"agent": agent,
		},
	}
}

func (b *Broker) audit(ctx context.Context, e audit.Event) {
	if b.cfg.Audit == nil {
		return
	}
	if _, err := b.cfg.Audit.Append(context.WithoutCancel(ctx), e); err != nil {
		b.log.Error("audit append failed", "action", e.Action, "err", err)
	}
}
