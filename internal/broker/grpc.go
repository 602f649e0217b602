package broker

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
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

// authenticate returns the calling agent's name and verified certificate
// from the mTLS peer.
func (s *Service) authenticate(ctx context.Context) (name string, cert *x509.Certificate, addr string, err error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", nil, "", status.Error(codes.Unauthenticated, "no peer")
	}
	addr = p.Addr.String()
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return "", nil, addr, status.Error(codes.Unauthenticated, "agent certificate required")
	}
	cert = ti.State.VerifiedChains[0][0]
	name, err = s.b.cfg.Agents.Verify(cert)
	if err != nil {
		return "", nil, addr, status.Error(codes.PermissionDenied, err.Error())
	}
	return name, cert, addr, nil
}

func serialOf(c *x509.Certificate) string { return hex.EncodeToString(c.SerialNumber.Bytes()) }

// Renew implements cofferv1.AgentServiceServer.
func (s *Service) Renew(ctx context.Context, req *cofferv1.RenewRequest) (*cofferv1.RenewResponse, error) {
	name, cert, _, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	der, err := s.b.cfg.Agents.Renew(ctx, name, serialOf(cert), req.GetCsr())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.b.audit(ctx, audit.Event{Actor: "agent:" + name, Action: "agent.renew", Object: "agent:" + name, Result: "ok"})
	return &cofferv1.RenewResponse{Certificate: der}, nil
}

var (
	errRemoved = status.Error(codes.PermissionDenied, "agent stream closed by the server: the agent is no longer enrolled")
	errClosed  = status.Error(codes.PermissionDenied, "agent stream closed by the server")
)

// Sync implements cofferv1.AgentServiceServer.
func (s *Service) Sync(stream cofferv1.AgentService_SyncServer) error {
	name, cert, addr, err := s.authenticate(stream.Context())
	if err != nil {
		return err
	}
	b := s.b
	// Features: the agent lists what it understands in the request
	// metadata; the server answers with what it understands. The agent
	// also says how large a message it can receive.
	md, _ := metadata.FromIncomingContext(stream.Context())
	maxRecv, err := cofferv1.ParseMaxRecv(md.Get(cofferv1.MaxRecvKey))
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if err := stream.SendHeader(metadata.Pairs(cofferv1.FeaturesKey, cofferv1.FeatureBatch)); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	sess := newSession(name, cancel, cofferv1.HasFeature(md.Get(cofferv1.FeaturesKey), cofferv1.FeatureBatch), maxRecv, &b.sending)
	if b.cfg.Spool != nil {
		sess.spool = b.spoolFlush
	}
	if b.hookBeforeRegister != nil {
		b.hookBeforeRegister(name)
	}
	b.mu.Lock()
	if old := b.sessions[name]; old != nil {
		old.cancel() // a reconnected agent replaces its old stream
	}
	b.sessions[name] = sess
	b.presence.mark(name)
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		if b.sessions[name] == sess {
			delete(b.sessions, name)
			b.presence.mark(name)
		}
		b.mu.Unlock()
		sess.close() // no push finds it any more
		b.cfg.Agents.Seen(name, "")
		b.log.Info("agent disconnected", "agent", name)
	}()
	// The agent may have been removed since it was authenticated, and
	// Disconnect may have run before the session above was registered: so
	// look again. Either Disconnect sees the session, or this sees the
	// removal (the fleet forgets the agent before Disconnect runs).
	if _, err := b.cfg.Agents.Verify(cert); err != nil {
		return errRemoved
	}
	labels, scope, ok := b.cfg.Agents.Host(name)
	if !ok {
		return errRemoved
	}
	b.mu.Lock()
	if h := b.hosts[name]; h != nil {
		h.labels, h.scope = labels, scope
	}
	b.mu.Unlock()
	b.cfg.Agents.Seen(name, addr)
	b.log.Info("agent connected", "agent", name, "addr", addr, "max_recv", maxRecv)

	errc := make(chan error, 2)
	go func() { errc <- sess.run(ctx, stream.Send) }()
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			if err := b.handle(ctx, sess, m); err != nil {
				errc <- err
				return
			}
		}
	}()
	select {
	case <-ctx.Done():
		if stream.Context().Err() == nil {
			return errClosed
		}
		return ctx.Err()
	case err := <-errc:
		if errors.Is(err, context.Canceled) {
			return errClosed
		}
		return err
	}
}

// handle applies one message from an agent.
func (b *Broker) handle(ctx context.Context, sess *session, m *cofferv1.AgentMessage) error {
	agent := sess.agent
	switch msg := m.Msg.(type) {
	case *cofferv1.AgentMessage_Hello:
		return nil
	case *cofferv1.AgentMessage_Started:
		c := msg.Started.GetContainer()
		if c.GetId() == "" {
			return status.Error(codes.InvalidArgument, "container without id")
		}
		labels, scope, ok := b.cfg.Agents.Host(agent)
		if !ok {
			return errRemoved
		}
		if err := b.admitReport(ctx, sess); err != nil {
			return err
		}
		b.started(sess, labels, scope, c)
	case *cofferv1.AgentMessage_Stopped:
		b.stopped(agent, msg.Stopped.GetId())
	case *cofferv1.AgentMessage_Sync:
		running := map[string]bool{}
		for _, id := range msg.Sync.GetRunning() {
			running[id] = true
		}
		b.mu.Lock()
		var gone []string
		if h := b.hosts[agent]; h != nil {
			for id := range h.containers {
				if !running[id] {
					gone = append(gone, id)
				}
			}
		}
		b.mu.Unlock()
		for _, id := range gone {
			b.stopped(agent, id)
		}
	case *cofferv1.AgentMessage_Applied:
		b.applied(agent, msg.Applied)
	case *cofferv1.AgentMessage_AppliedBatch:
		for _, a := range msg.AppliedBatch.GetApplied() {
			b.applied(agent, a)
		}
	default:
		return status.Error(codes.InvalidArgument, "unknown message")
	}
	return nil
}

// started records a container sess's agent reports, with the agent's
// labels and scope, and sends it its state. A container id another agent
// holds is refused: a report never takes a container away from its agent.
func (b *Broker) started(sess *session, labels map[string]string, scope string, info *cofferv1.Container) {
	agent := sess.agent
	b.mu.Lock()
	if b.sessions[agent] != sess {
		b.mu.Unlock()
		return // the stream was replaced or closed (the agent removed) meanwhile
	}
	h := b.hostLocked(agent)
	h.labels, h.scope = labels, scope
	if c := b.containers[info.Id]; c != nil && c.agent != agent {
		holder := c.agent
		h.anomalies.IDConflicts++
		h.anomalies.LastAnomaly, h.anomalies.LastAnomalyReason = time.Now().UTC(), ReasonIDConflict
		b.queueAudit("agent:"+agent, anomalyEvent(agent, ReasonIDConflict, audit.ResultDenied, map[string]string{
			"container_id": clip(info.Id), "container": clip(info.Name), "held_by": holder,
		}))
		b.mu.Unlock()
		b.log.Warn("agent reported a container that another agent holds; report refused", "agent", agent,
			"id", clip(info.Id), "container", clip(info.Name), "held_by", holder)
		b.backpressure()
		return
	}
	c := h.containers[info.Id]
	if c == nil {
		c = &ctr{agent: agent, host: h}
		h.containers[info.Id] = c
		b.containers[info.Id] = c
	}
	// c.info is what selectors see of it (kube.go).
	b.admitLocked(c, info)
	// A (re)started or re-reported container gets its full state again,
	// from generation 1: no acknowledgement of it has come yet, and the
	// first must not pass for a repeat of the last one before the report.
	c.gen, c.ackGen, c.errGen = 0, 0, 0
	b.regrant(c, b.cfg.Catalog.Bindings())
	b.push(c)
	b.mu.Unlock()
	b.backpressure()
}

func (b *Broker) stopped(agent, id string) {
	b.mu.Lock()
	h := b.hosts[agent]
	if h == nil || h.containers[id] == nil {
		b.mu.Unlock()
		return
	}
	c := h.containers[id]
	b.dropLocked(c, ReleaseStopped)
	h.bucket.give(time.Now(), b.cfg.ReportRate, float64(b.cfg.ReportBurst))
	b.mu.Unlock()
	for _, f := range c.applied {
		b.deliveryLater(id, delivery{agent: agent, action: "delivery.remove", info: c.info, f: f})
	}
}

// applied records an acknowledgement, as soon as it is read (see
// outbound.go: a stale one would be dropped).
func (b *Broker) applied(agent string, a *cofferv1.Applied) {
	b.mu.Lock()
	var c *ctr
	if h := b.hosts[agent]; h != nil {
		c = h.containers[a.GetContainerId()]
	}
	if c == nil || a.GetGeneration() != c.gen {
		b.mu.Unlock()
		return // stale ack: a newer state is on its way
	}
	if a.GetProcessOnly() { // the container's process changed, not its files
		c.process = processOf(c.applied, a.GetProcess())
		b.mu.Unlock()
		return
	}
	info := c.info
	if a.GetError() != "" {
		if c.errGen == c.gen {
			// The agent reports each state once: a repeat (a hostile or
			// broken agent) must not flood the log and the trail.
			b.mu.Unlock()
			return
		}
		c.errGen = c.gen
		b.mu.Unlock()
		b.log.Warn("delivery failed", "agent", agent, "container", info.Name, "id", info.Id, "err", clip(a.GetError()))
		ev := audit.Event{Actor: "agent:" + agent, Action: "delivery.apply", Object: "container:" + clip(info.Id), Result: "error",
			Details: map[string]string{"container": clip(info.Name), "error": clip(a.GetError()), "image_digest": clip(info.ImageDigest)}}
		b.auditLater(info.Id, ev)
		return
	}
	c.process = processOf(c.desired, a.GetProcess())
	if c.ackGen == c.gen {
		// A repeat of the acknowledgement already counted: it changes
		// nothing else, and must not count as activity (outbound.go),
		// or an agent repeating it would hold every delivery record at
		// deferMax.
		b.mu.Unlock()
		return
	}
	before := c.applied
	c.applied = c.desired
	c.ackGen = c.gen
	b.presence.mark(agent)
	b.active.touch()
	after := c.applied
	sentAt := c.sentAt
	b.mu.Unlock()
	deliveryLatency.Observe(ackLatency(time.Since(sentAt), a.GetHeldMs()).Seconds())

	old := map[string]*cofferv1.FileRef{}
	for _, f := range before {
		old[f.File] = f
	}
	for _, f := range after {
		p, had := old[f.File]
		delete(old, f.File)
		switch {
		case !had:
			b.deliveryLater(info.Id, delivery{agent: agent, action: "delivery.apply", info: info, f: f})
		case p.Secret != f.Secret || p.Version != f.Version:
			b.deliveryLater(info.Id, delivery{agent: agent, action: "delivery.rotate", info: info, f: f})
		}
	}
	for _, f := range old {
		b.deliveryLater(info.Id, delivery{agent: agent, action: "delivery.revoke", info: info, f: f})
	}
}

// fillDeliveryEvent makes e the audit record of a delivery action on file
// f of container info, in e's Details map if it has one (emptied first):
// the spool's write reuses one for every record.
func fillDeliveryEvent(e *audit.Event, agent string, info *cofferv1.Container, action string, f *cofferv1.FileRef) {
	t := textOf(agent, info, action, f)
	t.fill(e)
}

// deliveryText is what a delivery record says, the text an agent chose
// (container ids, names, images, pod labels) already clipped: the spool
// packs it (packDelivery), and a record read back from the spool is the
// Event fill makes of it, as the trail's is.
type deliveryText struct {
	agent, action, secret, file string
	version                     uint64
	id, name, image, digest     string
	pod                         [len(podDetails)]string
	podSet                      uint8 // bit i: pod[i] is set
	err                         string
}

func textOf(agent string, info *cofferv1.Container, action string, f *cofferv1.FileRef) deliveryText {
	t := deliveryText{agent: agent, action: action, secret: f.Secret, file: f.File, version: f.Version,
		id: clip(info.Id), name: clip(info.Name), image: clip(info.Image), digest: clip(info.ImageDigest)}
	// A pod's identity: the API server's when the server confirms node
	// agents' pods, else the node agent's report; never a Docker host's
	// (its k8s.* labels are dropped, see kube.go).
	if ls := info.GetLabels(); len(ls) > 0 {
		for i, l := range podDetails {
			if v, ok := ls[l.label]; ok {
				t.pod[i], t.podSet = clip(v), t.podSet|1<<i
			}
		}
	}
	return t
}

// fill makes e the record t says, in e's Details map if it has one
// (emptied first).
func (t *deliveryText) fill(e *audit.Event) {
	d := e.Details
	if d == nil {
		d = make(map[string]string, 8) // 8 slots: a Docker container's record; a pod's grows it
	} else {
		clear(d)
	}
	*e = audit.Event{Actor: "agent:" + t.agent, Action: t.action, Object: "secret:" + t.secret, Result: "ok", Details: d}
	d["secret"], d["version"], d["file"] = t.secret, strconv.FormatUint(t.version, 10), t.file
	d["container_id"], d["container"] = t.id, t.name
	d["image"], d["image_digest"] = t.image, t.digest
	d["agent"] = t.agent
	for i, l := range podDetails {
		if t.podSet&(1<<i) != 0 {
			d[l.detail] = t.pod[i]
		}
	}
	if t.err != "" {
		e.Result = audit.ResultError
		d["error"] = t.err
	}
}

// podDetails are the delivery record's details taken from a pod's labels.
var podDetails = [...]struct{ detail, label string }{
	{"namespace", LabelNamespace}, {"pod", LabelPod}, {"serviceaccount", LabelServiceAccount},
}

// clipLen bounds the text an agent chose (container ids, names, images,
// error messages) in an audit record: a record over audit.MaxRecordSize is
// refused, and a hostile agent must not be able to keep its deliveries out
// of the trail with a long container name.
const clipLen = 512

func clip(s string) string {
	if len(s) <= clipLen {
		return s
	}
	return strings.ToValidUTF8(s[:clipLen], "") + "…(truncated)"
}

// audit appends e and logs (and returns) a failure.
func (b *Broker) audit(ctx context.Context, e audit.Event) error {
	if b.cfg.Audit == nil {
		return nil
	}
	_, err := b.cfg.Audit.Append(context.WithoutCancel(ctx), e)
	if err != nil {
		b.log.Error("audit append failed", "action", e.Action, "err", err)
	}
	return err
}

// ackLatency is a delivery's time from push to acknowledgement, less what
// the agent says it held the acknowledgement back at the server's asking
// (ackHoldFor): an agent's claim counts up to ackHoldMax, and never makes
// the latency negative.
func ackLatency(elapsed time.Duration, heldMs uint32) time.Duration {
	held := min(time.Duration(heldMs)*time.Millisecond, ackHoldMax)
	return max(elapsed-held, 0)
}
