// Package docker implements container.Runtime for the Docker Engine, through
// the official client (github.com/moby/moby/client), negotiating the API
// version down to the engine's (1.41 for Docker 20.10).
//
// Watch subscribes to container events first and lists running containers
// second, so no start or stop falls between the two; a container may thus be
// reported Started twice, and consumers treat Started as idempotent. When the
// event stream breaks (the daemon restarted, the socket went away), Watch
// reconnects with exponential backoff and jitter, lists again and sends a new
// Synced. Every Info field comes from the engine (list, inspect, events),
// never from inside a container.
//
// Info.Labels holds only the container's own labels: Docker merges the
// image's labels into the container's, and Inspect takes out those the image
// carries with the same value, found by an image inspect of the container's
// image id (cached per id, bounded). See container.Info.
package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"

	"coffer/internal/container"
)

// Sentinel errors, returned wrapped.
var (
	ErrNotFound   = errors.New("no such container")
	ErrNotRunning = errors.New("container not running")
)

// Config tunes a Runtime. The zero value talks to DOCKER_HOST or the default
// socket and logs nowhere.
type Config struct {
	// Host is the engine's address, e.g. "unix:///var/run/docker.sock".
	// Empty: DOCKER_HOST, then the client's default.
	Host string
	// Logger receives reconnects and skipped containers; nil discards.
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between reconnects
	// (defaults 250ms and 30s); each failed attempt doubles the wait,
	// with jitter.
	MinBackoff, MaxBackoff time.Duration
	// Buffer is the capacity of Watch's channel (default 64).
	Buffer int
	// Resync is how often Watch lists running containers again while the
	// stream is healthy (a Started for each, then Synced), repairing any
	// event the engine dropped for a slow reader. Default 5 minutes;
	// negative disables.
	Resync time.Duration
}

// Runtime watches and inspects Docker containers.
type Runtime struct {
	cfg    Config
	log    *slog.Logger
	cli    *client.Client
	images imageLabelCache // labels of image ids
}

var _ container.Runtime = (*Runtime)(nil)

// New returns a Runtime for the engine cfg names. It does not connect yet.
func New(cfg Config) (*Runtime, error) {
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		return nil, fmt.Errorf("docker: MaxBackoff %v below MinBackoff %v", cfg.MaxBackoff, cfg.MinBackoff)
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 64
	}
	if cfg.Resync == 0 {
		cfg.Resync = 5 * time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := []client.Opt{client.FromEnv}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker: client for %q: %w", cfg.Host, err)
	}
	return &Runtime{cfg: cfg, log: log.With("runtime", "docker"), cli: cli}, nil
}

// Close releases the client's idle connections.
func (r *Runtime) Close() error { return r.cli.Close() }

// APIVersion is the API version in use: the one negotiated with the engine
// once a call has reached it.
func (r *Runtime) APIVersion() string { return r.cli.ClientVersion() }

// Inspect implements container.Runtime. It returns ErrNotFound or
// ErrNotRunning (wrapped) for a container that does not exist or does not run.
// When the container's image is gone, Labels is empty, ImageLabels holds all
// of Config.Labels and a warning is logged; any other failure to inspect the
// image is an error.
func (r *Runtime) Inspect(ctx context.Context, id string) (container.Info, error) {
	res, err := r.cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		if isNotFound(err) {
			return container.Info{}, fmt.Errorf("docker: inspect %s: %w", id, ErrNotFound)
		}
		return container.Info{}, fmt.Errorf("docker: inspect %s: %w", id, err)
	}
	c := res.Container
	if c.State == nil || !c.State.Running || c.State.Pid <= 0 {
		return container.Info{}, fmt.Errorf("docker: inspect %s: %w", id, ErrNotRunning)
	}
	info := container.Info{
		ID:          c.ID,
		Name:        strings.TrimPrefix(c.Name, "/"),
		ImageDigest: c.Image,
		PID:         c.State.Pid,
	}
	var merged map[string]string // the container's and its image's labels
	if c.Config != nil {
		info.Image = c.Config.Image
		merged = c.Config.Labels
	}
	image, err := r.imageLabels(ctx, c.Image)
	switch {
	case err == nil:
		info.Labels, info.ImageLabels = ownLabels(merged, image), image
	case isNotFound(err):
		// The image was deleted: the merged labels can no longer be told
		// apart, so none of them is proven to be the operator's.
		r.log.Warn("image of container is gone: its labels cannot be told from the container's own; treating them all as image labels",
			"container", c.ID, "image", c.Image)
		info.Labels, info.ImageLabels = map[string]string{}, maps.Clone(merged)
		if info.ImageLabels == nil {
			info.ImageLabels = map[string]string{}
		}
	default:
		return container.Info{}, fmt.Errorf("docker: inspect %s: %w %s: %w", id, errImage, c.Image, err)
	}
	return info, nil
}

// errImage marks a failure to read a container's image (not its absence):
// the container cannot be reported, but other containers can.
var errImage = errors.New("image")

// isNotFound uses the error vocabulary the Docker client itself returns.
func isNotFound(err error) bool { return cerrdefs.IsNotFound(err) }

// Watch implements container.Runtime. The first connection is made before
// Watch returns: if the engine does not answer, Watch fails. Later losses are
// retried until ctx ends.
func (r *Runtime) Watch(ctx context.Context) (<-chan container.Event, error) {
	s, err := r.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("docker: watch: %w", err)
	}
	out := make(chan container.Event, r.cfg.Buffer)
	go r.run(ctx, out, s)
	return out, nil
}

// session is one connection: an event subscription and what was listed.
type session struct {
	cancel  context.CancelFunc
	msgs    <-chan events.Message
	errs    <-chan error
	started []container.Info
}

// connect subscribes to container events, then lists running containers.
func (r *Runtime) connect(ctx context.Context) (*session, error) {
	if _, err := r.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true, ForceNegotiate: true}); err != nil {
		return nil, fmt.Errorf("ping %s: %w", r.cli.DaemonHost(), err)
	}
	evCtx, cancel := context.WithCancel(ctx)
	f := client.Filters{}
	f.Add("type", string(events.ContainerEventType))
	f.Add("event", string(events.ActionStart), string(events.ActionDie), string(events.ActionStop), string(events.ActionDestroy))
	ev := r.cli.Events(evCtx, client.EventsListOptions{Filters: f})

	started, err := r.list(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	return &session{cancel: cancel, msgs: ev.Messages, errs: ev.Err, started: started}, nil
}

// list returns the Info of every running container.
func (r *Runtime) list(ctx context.Context) ([]container.Info, error) {
	list, err := r.cli.ContainerList(ctx, client.ContainerListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	infos := make([]container.Info, 0, len(list.Items))
	for _, c := range list.Items {
		info, err := r.Inspect(ctx, c.ID)
		if err != nil {
			if errors.Is(err, ErrNotFound) || errors.Is(err, ErrNotRunning) {
				continue // gone since the list; its events follow
			}
			if errors.Is(err, errImage) && ctx.Err() == nil {
				// Never reported with labels that were not split; the
				// next list tries again.
				r.log.Warn("skipping container: cannot read its image's labels", "id", c.ID, "err", err)
				continue
			}
			return nil, err
		}
		infos = append(infos, info)
	}
	return infos, nil
}

// run sends a session's list, then its events, reconnecting when it breaks.
func (r *Runtime) run(ctx context.Context, out chan<- container.Event, s *session) {
	defer close(out)
	send := container.SendTo(ctx, out)
	for {
		known, ok := container.Announce(s.started, send)
		if !ok {
			s.cancel()
			return
		}
		err := r.follow(ctx, s, known, send)
		s.cancel()
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("docker event stream lost; reconnecting", "err", err)
		if s = r.reconnect(ctx); s == nil {
			return
		}
	}
}

// follow turns a session's events into Started and Stopped until the stream
// fails or ctx ends, listing again every cfg.Resync. known holds the ids
// reported running.
//
// Started containers are inspected concurrently (an inspect waits behind
// the engine's other work, so when many containers start at once a serial
// loop makes the last wait for all the others). A container's own events
// keep their order: a stop that arrives while its start is being inspected
// is sent after that start.
func (r *Runtime) follow(ctx context.Context, s *session, known map[string]bool, send func(container.Event) bool) error {
	var tick <-chan time.Time
	if r.cfg.Resync > 0 {
		t := time.NewTicker(r.cfg.Resync)
		defer t.Stop()
		tick = t.C
	}
	type inspected struct {
		id   string
		info container.Info
		err  error
	}
	results := make(chan inspected)
	// Inspections in flight end with this call.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pending := map[string]bool{}   // ids being inspected
	stopAfter := map[string]bool{} // ids whose stop came during the inspection
	stopped := func(id string, m events.Message) bool {
		if !known[id] {
			return true
		}
		delete(known, id)
		info := container.Info{ID: id, Name: m.Actor.Attributes["name"], Image: m.Actor.Attributes["image"]}
		return send(container.Event{Kind: container.Stopped, Info: info})
	}
	lastStop := map[string]events.Message{}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
			infos, err := r.list(ctx)
			if err != nil {
				return err
			}
			var ok bool
			if known, ok = container.Announce(infos, send); !ok {
				return ctx.Err()
			}
		case err := <-s.errs:
			if err == nil {
				err = errors.New("event stream closed")
			}
			return err
		case res := <-results:
			delete(pending, res.id)
			if res.err != nil {
				// Gone already (its die follows or came) or the engine
				// failed: the stream's error will tell.
				r.log.Debug("skipping started container", "id", res.id, "err", res.err)
				delete(stopAfter, res.id)
				continue
			}
			known[res.id] = true
			if !send(container.Event{Kind: container.Started, Info: res.info}) {
				return ctx.Err()
			}
			if stopAfter[res.id] {
				delete(stopAfter, res.id)
				if !stopped(res.id, lastStop[res.id]) {
					return ctx.Err()
				}
			}
			delete(lastStop, res.id)
		case m := <-s.msgs:
			id := m.Actor.ID
			switch m.Action {
			case events.ActionStart:
				delete(stopAfter, id) // a later start supersedes a stop seen meanwhile
				if pending[id] {
					continue
				}
				pending[id] = true
				go func() {
					info, err := r.Inspect(fctx, id)
					select {
					case results <- inspected{id, info, err}:
					case <-fctx.Done():
					}
				}()
			case events.ActionDie, events.ActionStop, events.ActionDestroy:
				if pending[id] {
					stopAfter[id] = true
					lastStop[id] = m
					continue
				}
				if !stopped(id, m) {
					return ctx.Err()
				}
			}
		}
	}
}

// reconnect retries connect with exponential backoff and jitter until it
// succeeds (returning the session) or ctx ends (returning nil).
func (r *Runtime) reconnect(ctx context.Context) *session {
	wait := r.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		// Equal jitter: between half and all of the current wait.
		d := wait/2 + rand.N(wait/2+1)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil
		}
		s, err := r.connect(ctx)
		if err == nil {
			r.log.Info("docker event stream reconnected", "attempt", attempt, "running", len(s.started))
			return s
		}
		if ctx.Err() != nil {
			return nil
		}
		r.log.Warn("docker reconnect failed", "attempt", attempt, "retry_in", min(wait*2, r.cfg.MaxBackoff), "err", err)
		wait = min(wait*2, r.cfg.MaxBackoff)
	}
}
