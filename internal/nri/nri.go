// Package nri is coffer-agent's NRI plugin (containerd ≥ 1.7 with NRI on;
// on by default in 2.x): it makes the first delivery into a pod's
// container race-free.
//
//   - At CreateContainer it reports the container to the agent (Prepare:
//     the server's answer then has until the container starts to arrive)
//     and adds a tmpfs at the target directory to the container's OCI spec
//     (noswap,nosuid,nodev,noexec, mode 0711, the Deliverer's size cap), so
//     the directory exists from the first instruction, even on a read-only
//     root file system.
//   - At StartContainer (the process exists, held in runc init, and has
//     not run) it has the agent write the files it holds for the container
//     from memory (StartNow), never waiting on the server.
//
// Every request is answered well inside NRI's 2 s timeout (a timeout makes
// containerd drop the plugin). Fail-open by default: a container whose
// state has not arrived, or whose identity cannot be read, starts anyway
// and gets its files as soon as they come, as on Docker; a plugin that is
// down only costs the early delivery (containerd then starts containers
// without the mount). Fail-closed for a pod annotated RequireAnnotation:
// the start is refused and the kubelet retries. The plugin reconnects when
// containerd restarts.
package nri

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/nri/pkg/api"
	nrilog "github.com/containerd/nri/pkg/log"
	"github.com/containerd/nri/pkg/stub"

	"coffer/internal/container"
)

// DefaultSocket is NRI's default socket.
const DefaultSocket = "/var/run/nri/nri.sock"

// PluginName is how the plugin registers; a pod annotated
// `required-plugins.noderesource.dev/pod: '["coffer"]'` does not start
// while it is absent (with containerd's default validator enabled).
const PluginName = "coffer"

// RequireAnnotation is the pod annotation that makes its containers
// fail-closed: with the value "true", a container whose files the agent
// does not hold at StartContainer (the server is down or has not answered)
// is refused, and the kubelet retries it with its back-off (10 s doubling
// to 5 min); the retry passes once the files can be written. Without it
// containers start and get their files as soon as they come (fail-open).
const RequireAnnotation = "coffer/require-secrets"

// Agent is what the plugin needs of the agent (*agent.Agent).
type Agent interface {
	Prepare(info container.Info) bool
	StartNow(ctx context.Context, info container.Info, limit time.Duration) (ready bool)
	Forget(ctx context.Context, id string)
}

// Identity reads a container being created from the runtime
// (*containerd.Runtime).
type Identity interface {
	Pending(ctx context.Context, sandboxID, id, name, image string) (container.Info, error)
}

// Config configures a Plugin.
type Config struct {
	Socket    string // NRI's socket; default DefaultSocket
	Dir       string // target directory inside containers, e.g. /run/coffer
	SizeBytes int64  // tmpfs size cap (default 4 MiB)
	Agent     Agent
	Identity  Identity
	Logger    *slog.Logger
	// Limit bounds the work done in one request (default 1.5s, below
	// NRI's 2s).
	Limit time.Duration
	// MinBackoff and MaxBackoff bound reconnects (defaults 250ms, 10s).
	MinBackoff, MaxBackoff time.Duration
}

// Plugin is the NRI plugin.
type Plugin struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	pending map[string]pending // created, not started yet
	runCtx  context.Context    // Run's: bounds the workers StartNow hands over to
	up      bool               // registered with NRI
}

// Connected reports whether the plugin is registered with NRI now.
func (p *Plugin) Connected() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.up
}

func (p *Plugin) setUp(up bool) {
	p.mu.Lock()
	p.up = up
	p.mu.Unlock()
}

// New makes a Plugin.
func New(cfg Config) (*Plugin, error) {
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	if cfg.Dir == "" || cfg.Dir[0] != '/' {
		return nil, fmt.Errorf("nri: target directory %q: want an absolute path", cfg.Dir)
	}
	if cfg.Agent == nil || cfg.Identity == nil {
		return nil, errors.New("nri: Agent and Identity are required")
	}
	if cfg.SizeBytes <= 0 {
		cfg.SizeBytes = 4 << 20
	}
	if cfg.Limit <= 0 {
		cfg.Limit = 1500 * time.Millisecond
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Plugin{cfg: cfg, log: log.With("component", "nri"), pending: map[string]pending{}}, nil
}

// pending is what CreateContainer decided for a container.
type pending struct {
	info     container.Info
	prepared bool // reported to the agent, which serves it
}

// remember records a create's decision, within bounds.
func (p *Plugin) remember(id string, e pending) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pending) < maxPending {
		p.pending[id] = e
	}
}

// Run connects to NRI and serves it until ctx ends, reconnecting with
// backoff whenever the connection is lost (containerd restarted) or cannot
// be made (NRI off: a warning, then retries).
func (p *Plugin) Run(ctx context.Context) {
	nrilog.Set(logAdapter{p.log})
	p.mu.Lock()
	p.runCtx = ctx
	p.mu.Unlock()
	wait := p.cfg.MinBackoff
	var warned time.Time
	for ctx.Err() == nil {
		start := time.Now()
		err := p.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 10*time.Second {
			wait = p.cfg.MinBackoff
		}
		// One warning per outage, then one every 5 minutes (a containerd
		// without NRI would otherwise fill the log).
		if time.Since(start) > 10*time.Second || time.Since(warned) > 5*time.Minute {
			warned = time.Now()
			p.log.Warn("NRI connection lost or refused; pods start without early delivery (their files follow after start) until it is back",
				"socket", p.cfg.Socket, "err", err)
		} else {
			p.log.Debug("NRI reconnect failed", "socket", p.cfg.Socket, "err", err, "retry_in", wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait/2 + rand.N(wait/2+1)):
		}
		wait = min(wait*2, p.cfg.MaxBackoff)
	}
}

// session runs one connection until it closes.
func (p *Plugin) session(ctx context.Context) error {
	closed := make(chan struct{})
	var once sync.Once
	s, err := stub.New(p, stub.WithPluginName(PluginName), stub.WithPluginIdx("50"), stub.WithSocketPath(p.cfg.Socket),
		// Without it the stub exits the process when the connection closes.
		stub.WithOnClose(func() { once.Do(func() { close(closed) }) }))
	if err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		return err
	}
	p.log.Info("NRI plugin registered", "socket", p.cfg.Socket, "dir", p.cfg.Dir)
	p.setUp(true)
	defer p.setUp(false)
	select {
	case <-ctx.Done():
		s.Stop()
		return ctx.Err()
	case <-closed:
		s.Stop()
		return errors.New("connection closed")
	}
}

// CreateContainer reports the container and adds its tmpfs.
func (p *Plugin) CreateContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Limit)
	defer cancel()
	info, err := p.cfg.Identity.Pending(ctx, pod.GetId(), ctr.GetId(), ctr.GetName(), ctr.GetAnnotations()["io.kubernetes.cri.image-name"])
	if err != nil {
		// Fail-open, even for a pod that requires its secrets (they could
		// never come): the runtime's events report it after start, or skip it.
		p.log.Warn("container identity not readable at create; no early delivery", "id", ctr.GetId(), "err", err)
		p.remember(ctr.GetId(), pending{})
		return nil, nil, nil
	}
	if !p.cfg.Agent.Prepare(info) {
		p.remember(ctr.GetId(), pending{})
		return nil, nil, nil // not served (--only-labels): untouched
	}
	p.remember(info.ID, pending{info: info, prepared: true})
	adj := &api.ContainerAdjustment{}
	adj.AddMount(&api.Mount{
		Destination: p.cfg.Dir,
		Type:        "tmpfs",
		Source:      "coffer",
		Options:     []string{"nosuid", "nodev", "noexec", "noswap", "mode=0711", "size=" + strconv.FormatInt(p.cfg.SizeBytes, 10)},
	})
	p.log.Debug("container created", "id", info.ID, "name", info.Name)
	return adj, nil, nil
}

// maxPending bounds the containers created and not started yet.
const maxPending = 4096

// StartContainer writes the files the agent holds for the container.
func (p *Plugin) StartContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	p.mu.Lock()
	e, ok := p.pending[ctr.GetId()]
	delete(p.pending, ctr.GetId())
	p.mu.Unlock()
	required := pod.GetAnnotations()[RequireAnnotation] == "true"
	if !ok {
		// Created while the plugin was away: the runtime's events take it.
		// A pod that requires its secrets waits for the kubelet's retry,
		// which is created with the plugin here.
		if required {
			return p.refuse(pod, ctr, "it was created while Coffer's NRI plugin was not connected")
		}
		return nil
	}
	if !e.prepared || ctr.GetPid() == 0 {
		return nil // not served, or its identity cannot be read
	}
	info := e.info
	info.PID = int(ctr.GetPid())
	start := time.Now()
	p.mu.Lock()
	runCtx := p.runCtx
	p.mu.Unlock()
	if runCtx == nil {
		runCtx = context.WithoutCancel(ctx)
	}
	ready := p.cfg.Agent.StartNow(runCtx, info, p.cfg.Limit)
	p.log.Debug("container starting", "id", info.ID, "name", info.Name, "ready", ready, "took", time.Since(start))
	if !ready && required {
		return p.refuse(pod, ctr, "the agent does not hold its secrets yet (the server is unreachable or has not answered)")
	}
	return nil
}

// refuse fails a container's start, for a pod annotated RequireAnnotation.
func (p *Plugin) refuse(pod *api.PodSandbox, ctr *api.Container, why string) error {
	p.log.Warn("refusing to start a container of a pod that requires its secrets; the kubelet retries it",
		"pod", clip(pod.GetNamespace()+"/"+pod.GetName()), "container", clip(ctr.GetName()), "why", why)
	return fmt.Errorf("coffer: container %s of pod %s/%s not started: %s (pod annotated %s=true; the kubelet retries)",
		clip(ctr.GetName()), clip(pod.GetNamespace()), clip(pod.GetName()), why, RequireAnnotation)
}

// clip bounds text from the runtime in logs and errors.
func clip(s string) string {
	if len(s) > 256 {
		s = s[:256] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// StopContainer forgets a container whose start failed or was refused
// (containerd stops it through NRI then), and is a no-op for others.
func (p *Plugin) StopContainer(ctx context.Context, _ *api.PodSandbox, ctr *api.Container) ([]*api.ContainerUpdate, error) {
	p.forget(ctx, ctr.GetId())
	return nil, nil
}

// RemoveContainer forgets a container that was created and never started.
func (p *Plugin) RemoveContainer(ctx context.Context, _ *api.PodSandbox, ctr *api.Container) error {
	p.forget(ctx, ctr.GetId())
	return nil
}

func (p *Plugin) forget(ctx context.Context, id string) {
	p.mu.Lock()
	delete(p.pending, id)
	p.mu.Unlock()
	p.cfg.Agent.Forget(ctx, id)
}

// logAdapter sends NRI's own log lines to the agent's logger.
type logAdapter struct{ l *slog.Logger }

func (a logAdapter) Debugf(_ context.Context, f string, args ...any) {
	a.l.Debug(fmt.Sprintf(f, args...))
}
func (a logAdapter) Infof(_ context.Context, f string, args ...any) {
	a.l.Info(fmt.Sprintf(f, args...))
}
func (a logAdapter) Warnf(_ context.Context, f string, args ...any) {
	a.l.Warn(fmt.Sprintf(f, args...))
}
func (a logAdapter) Errorf(_ context.Context, f string, args ...any) {
	a.l.Error(fmt.Sprintf(f, args...))
}
