// Package containerd implements container.Runtime for containerd's CRI
// (Kubernetes nodes), against containerd 1.6 and 2.x alike.
//
// It speaks two stable gRPC APIs on containerd's socket: the CRI
// (k8s.io/cri-api runtime.v1) for what the kubelet asked for — containers,
// their pod sandboxes with the pod's labels and metadata, images — and
// containerd's own API (github.com/containerd/containerd/api: the events
// and tasks services, which the official client wraps) for start and exit
// events and the host pid of a container's process. The CRI's own event
// stream (GetContainerEvents) is not used: containerd 1.6 does not
// implement it.
//
// Watch subscribes to task events first and lists running containers
// second, so no start or stop falls between the two; a container may be
// reported Started twice. When the event stream breaks (containerd
// restarted; its containers keep running) Watch reconnects with backoff and
// jitter, lists again and sends a new Synced. Pod sandboxes (pause
// containers) are never reported.
//
// Identity comes from the runtime only: a container's Labels are its pod's
// labels (the CRI puts them on the pod sandbox, not on the container) plus
// the reserved keys k8s.namespace, k8s.pod and k8s.container taken from the
// CRI's metadata, which override any pod label with the same key
// (k8s.serviceaccount is reserved but not set; see LabelServiceAccount).
package containerd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	ctrevents "github.com/containerd/containerd/api/events"
	eventsapi "github.com/containerd/containerd/api/services/events/v1"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	ctrtypes "github.com/containerd/containerd/api/types"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"coffer/internal/container"
)

// Sentinel errors, returned wrapped.
var (
	ErrNotFound   = errors.New("no such container")
	ErrNotRunning = errors.New("container not running")
	// ErrNoCRI: containerd answers but has no CRI plugin (it is disabled
	// in its config, or failed to load).
	ErrNoCRI = errors.New("containerd has no CRI plugin (io.containerd.grpc.v1.cri)")
)

// Defaults.
const (
	DefaultSocket    = "/run/containerd/containerd.sock"
	DefaultNamespace = "k8s.io" // the CRI's containerd namespace
)

// Config tunes a Runtime. The zero value talks to DefaultSocket.
type Config struct {
	Socket    string // containerd's gRPC socket; default DefaultSocket
	Namespace string // containerd namespace of the CRI's containers; default DefaultNamespace
	// Logger receives reconnects and skipped containers; nil discards.
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between reconnects
	// (defaults 250ms and 30s), doubling with jitter.
	MinBackoff, MaxBackoff time.Duration
	// Buffer is the capacity of Watch's channel (default 64).
	Buffer int
	// Resync is how often Watch lists running containers again while the
	// stream is healthy; default 5 minutes, negative disables.
	Resync time.Duration
	// CallTimeout bounds each call to containerd (default 10s).
	CallTimeout time.Duration
}

// Runtime watches and inspects the CRI's containers.
type Runtime struct {
	cfg    Config
	log    *slog.Logger
	conn   *grpc.ClientConn
	cri    runtimeapi.RuntimeServiceClient
	img    runtimeapi.ImageServiceClient
	events eventsapi.EventsClient
	tasks  tasksapi.TasksClient
	pods   podCache
	images imageCache
}

var _ container.Runtime = (*Runtime)(nil)

// New returns a Runtime for the socket cfg names. It does not connect yet.
func New(cfg Config) (*Runtime, error) {
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		return nil, fmt.Errorf("containerd: MaxBackoff %v below MinBackoff %v", cfg.MaxBackoff, cfg.MinBackoff)
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 64
	}
	if cfg.Resync == 0 {
		cfg.Resync = 5 * time.Minute
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	if !strings.HasPrefix(cfg.Socket, "/") {
		return nil, fmt.Errorf("containerd: socket %q: want an absolute path", cfg.Socket)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	conn, err := grpc.NewClient("unix://"+cfg.Socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, fmt.Errorf("containerd: client for %s: %w", cfg.Socket, err)
	}
	return &Runtime{
		cfg: cfg, log: log.With("runtime", "containerd"), conn: conn,
		cri:    runtimeapi.NewRuntimeServiceClient(conn),
		img:    runtimeapi.NewImageServiceClient(conn),
		events: eventsapi.NewEventsClient(conn),
		tasks:  tasksapi.NewTasksClient(conn),
	}, nil
}

// Close closes the connection.
func (r *Runtime) Close() error { return r.conn.Close() }

// Version asks the CRI for its runtime's name and version (e.g.
// "containerd", "1.6.20~ds1"). It fails with ErrNoCRI when containerd has
// no CRI.
func (r *Runtime) Version(ctx context.Context) (name, version string, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	v, err := r.cri.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		if status.Code(err) == codes.Unimplemented {
			return "", "", fmt.Errorf("containerd at %s: %w", r.cfg.Socket, ErrNoCRI)
		}
		return "", "", fmt.Errorf("containerd at %s: %w", r.cfg.Socket, err)
	}
	return v.GetRuntimeName(), v.GetRuntimeVersion(), nil
}

// nsCtx carries the containerd namespace for containerd's own services.
func (r *Runtime) nsCtx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "containerd-namespace", r.cfg.Namespace)
}

// Inspect implements container.Runtime for a CRI container (not a pod
// sandbox: a sandbox's id gives ErrNotFound). It returns ErrNotFound or
// ErrNotRunning (wrapped).
func (r *Runtime) Inspect(ctx context.Context, id string) (container.Info, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	resp, err := r.cri.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: id}})
	if err != nil {
		return container.Info{}, fmt.Errorf("containerd: inspect %s: %w", id, err)
	}
	for _, c := range resp.GetContainers() {
		if c.GetId() == id { // the CRI's id filter also takes prefixes
			return r.info(ctx, c, 0)
		}
	}
	return container.Info{}, fmt.Errorf("containerd: inspect %s: %w", id, ErrNotFound)
}

// info completes a CRI container's Info with its task's pid (pid > 0: the
// one an event gave, checked against the task), its pod and its image.
func (r *Runtime) info(ctx context.Context, c *runtimeapi.Container, pid uint32) (container.Info, error) {
	id := c.GetId()
	t, err := r.tasks.Get(r.nsCtx(ctx), &tasksapi.GetRequest{ContainerID: id})
	if err != nil {
		if status.Code(err) == codes.NotFound {
			return container.Info{}, fmt.Errorf("containerd: inspect %s: %w", id, ErrNotRunning)
		}
		return container.Info{}, fmt.Errorf("containerd: inspect %s: task: %w", id, err)
	}
	p := t.GetProcess()
	if p.GetStatus() != tasktypes.Status_RUNNING || p.GetPid() == 0 || (pid != 0 && p.GetPid() != pid) {
		return container.Info{}, fmt.Errorf("containerd: inspect %s: %w", id, ErrNotRunning)
	}
	pd, err := r.pod(ctx, c.GetPodSandboxId())
	if err != nil {
		return container.Info{}, fmt.Errorf("containerd: inspect %s: %w", id, err)
	}
	name := c.GetMetadata().GetName()
	image := c.GetImage().GetUserSpecifiedImage()
	if image == "" {
		image = c.GetImage().GetImage()
	}
	for _, f := range []string{name, image, id} {
		if err := checkField(f); err != nil {
			return container.Info{}, fmt.Errorf("containerd: inspect %s: %w: %w", clip(id), errIdentity, err)
		}
	}
	info := container.Info{
		ID:          id,
		Name:        pd.namespace + "/" + pd.name + "/" + name,
		Labels:      labelsOf(pd, name),
		ImageDigest: imageDigest(c),
		Image:       image,
		PID:         int(p.GetPid()),
		Pod:         podRef(pd, name),
	}
	im := r.image(ctx, info.ImageDigest)
	info.ImageLabels = im.labels
	if strings.HasPrefix(info.Image, "sha256:") && im.name != "" {
		// The kubelet may pass the image id; report a name patterns match.
		info.Image = im.name
	}
	return info, nil
}

// Pending returns the Info of a container the CRI is creating in sandbox
// sandboxID, before containerd or the CRI list it (an NRI CreateContainer
// request gives its id, name and image): the pod's identity comes from the
// CRI, the image's id and labels from the CRI's image service. PID is 0.
func (r *Runtime) Pending(ctx context.Context, sandboxID, id, name, image string) (container.Info, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	for _, f := range []string{name, image, id} {
		if err := checkField(f); err != nil {
			return container.Info{}, fmt.Errorf("containerd: pending %s: %w: %w", clip(id), errIdentity, err)
		}
	}
	pd, err := r.pod(ctx, sandboxID)
	if err != nil {
		return container.Info{}, fmt.Errorf("containerd: pending %s: %w", clip(id), err)
	}
	info := container.Info{ID: id, Name: pd.namespace + "/" + pd.name + "/" + name, Labels: labelsOf(pd, name), Image: image, ImageLabels: map[string]string{}, Pod: podRef(pd, name)}
	if image != "" {
		resp, err := r.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: image}})
		if err == nil && resp.GetImage() != nil {
			info.ImageDigest = resp.GetImage().GetId()
			im := r.image(ctx, info.ImageDigest)
			info.ImageLabels = im.labels
			if strings.HasPrefix(image, "sha256:") && im.name != "" {
				info.Image = im.name
			}
		}
	}
	return info, nil
}

// pod returns a sandbox's identity, from the cache or the CRI.
func (r *Runtime) pod(ctx context.Context, sandboxID string) (pod, error) {
	if p, ok := r.pods.get(sandboxID); ok {
		return p, nil
	}
	resp, err := r.cri.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{Id: sandboxID}})
	if err != nil {
		return pod{}, fmt.Errorf("pod sandbox %s: %w", sandboxID, err)
	}
	for _, sb := range resp.GetItems() {
		if sb.GetId() == sandboxID {
			p, err := podOf(sb)
			if err != nil {
				return pod{}, err
			}
			r.pods.put(sandboxID, p)
			return p, nil
		}
	}
	return pod{}, fmt.Errorf("pod sandbox %s: %w", sandboxID, ErrNotFound)
}

// Watch implements container.Runtime. The first connection is made before
// Watch returns: a wrong socket, or a containerd without CRI, fails it.
// Later losses are retried until ctx ends.
func (r *Runtime) Watch(ctx context.Context) (<-chan container.Event, error) {
	s, err := r.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("containerd: watch: %w", err)
	}
	out := make(chan container.Event, r.cfg.Buffer)
	go r.run(ctx, out, s)
	return out, nil
}

// session is one connection: an event subscription and what was listed.
type session struct {
	cancel  context.CancelFunc
	stream  eventsapi.Events_SubscribeClient
	started []container.Info
}

// connect checks the CRI, subscribes to task events, then lists.
func (r *Runtime) connect(ctx context.Context) (*session, error) {
	if _, _, err := r.Version(ctx); err != nil {
		return nil, err
	}
	evCtx, cancel := context.WithCancel(ctx)
	ns := "namespace==" + r.cfg.Namespace
	stream, err := r.events.Subscribe(evCtx, &eventsapi.SubscribeRequest{Filters: []string{
		ns + `,topic=="/tasks/start"`, ns + `,topic=="/tasks/exit"`, ns + `,topic=="/tasks/delete"`,
		ns + `,topic=="/containers/delete"`,
	}})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("containerd at %s: subscribe: %w", r.cfg.Socket, err)
	}
	started, err := r.list(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	return &session{cancel: cancel, stream: stream, started: started}, nil
}

// list returns the Info of every running CRI container. Containers whose
// identity cannot be reported are skipped with a warning.
func (r *Runtime) list(ctx context.Context) ([]container.Info, error) {
	lctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	sbs, err := r.cri.ListPodSandbox(lctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: list pod sandboxes: %w", r.cfg.Socket, err)
	}
	live := make(map[string]bool, len(sbs.GetItems()))
	for _, sb := range sbs.GetItems() {
		live[sb.GetId()] = true
		if _, ok := r.pods.get(sb.GetId()); ok {
			continue
		}
		p, err := podOf(sb)
		if err != nil {
			r.log.Warn("skipping pod: its identity cannot be reported", "sandbox", clip(sb.GetId()), "err", err)
			continue
		}
		r.pods.put(sb.GetId(), p)
	}
	r.pods.keep(live)
	list, err := r.cri.ListContainers(lctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
	}})
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: list containers: %w", r.cfg.Socket, err)
	}
	infos := make([]container.Info, 0, len(list.GetContainers()))
	for _, c := range list.GetContainers() {
		ictx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
		info, err := r.info(ictx, c, 0)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, ErrNotFound) || errors.Is(err, ErrNotRunning) {
				continue // gone since the list; its events follow
			}
			r.log.Warn("skipping container", "id", clip(c.GetId()), "err", err)
			continue
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
		r.log.Warn("containerd event stream lost; reconnecting", "err", err)
		if s = r.reconnect(ctx); s == nil {
			return
		}
	}
}

// event is a decoded task event: a start (pid > 0) or the end of a
// container's task.
type event struct {
	id    string
	start bool
	pid   uint32
}

// decode reads the events Watch subscribed to. ok is false for others (the
// exit of an exec'd process, not the container's).
func decode(env *ctrtypes.Envelope) (ev event, ok bool) {
	raw := env.GetEvent().GetValue()
	switch env.GetTopic() {
	case "/tasks/start":
		var m ctrevents.TaskStart
		if proto.Unmarshal(raw, &m) != nil {
			return event{}, false
		}
		return event{id: m.GetContainerID(), start: true, pid: m.GetPid()}, m.GetContainerID() != ""
	case "/tasks/exit":
		var m ctrevents.TaskExit
		if proto.Unmarshal(raw, &m) != nil || (m.GetID() != "" && m.GetID() != m.GetContainerID()) {
			return event{}, false
		}
		return event{id: m.GetContainerID()}, m.GetContainerID() != ""
	case "/tasks/delete":
		var m ctrevents.TaskDelete
		if proto.Unmarshal(raw, &m) != nil || (m.GetID() != "" && m.GetID() != m.GetContainerID()) {
			return event{}, false
		}
		return event{id: m.GetContainerID()}, m.GetContainerID() != ""
	case "/containers/delete":
		var m ctrevents.ContainerDelete
		if proto.Unmarshal(raw, &m) != nil {
			return event{}, false
		}
		return event{id: m.GetID()}, m.GetID() != ""
	}
	return event{}, false
}

// follow turns a session's events into Started and Stopped until the stream
// fails or ctx ends, listing again every cfg.Resync. Starts are inspected
// concurrently; a container's own events keep their order (a stop that
// comes while its start is inspected is sent after that start).
func (r *Runtime) follow(ctx context.Context, s *session, known map[string]bool, send func(container.Event) bool) error {
	var tick <-chan time.Time
	if r.cfg.Resync > 0 {
		t := time.NewTicker(r.cfg.Resync)
		defer t.Stop()
		tick = t.C
	}
	// Work started here ends with this call.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs := make(chan *ctrtypes.Envelope)
	errc := make(chan error, 1)
	go func() {
		for {
			env, err := s.stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- env:
			case <-fctx.Done():
				return
			}
		}
	}()
	type inspected struct {
		id   string
		info container.Info
		err  error
	}
	results := make(chan inspected)
	pending := map[string]bool{}
	stopAfter := map[string]bool{}
	stopped := func(id string) bool {
		if !known[id] {
			return true
		}
		delete(known, id)
		return send(container.Event{Kind: container.Stopped, Info: container.Info{ID: id}})
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
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
		case err := <-errc:
			return err
		case res := <-results:
			delete(pending, res.id)
			if res.err != nil {
				delete(stopAfter, res.id)
				if errors.Is(res.err, errIdentity) {
					r.log.Warn("skipping container", "id", clip(res.id), "err", res.err)
				} else {
					// A pod sandbox, or gone already.
					r.log.Debug("skipping started task", "id", clip(res.id), "err", res.err)
				}
				continue
			}
			known[res.id] = true
			if !send(container.Event{Kind: container.Started, Info: res.info}) {
				return ctx.Err()
			}
			if stopAfter[res.id] {
				delete(stopAfter, res.id)
				if !stopped(res.id) {
					return ctx.Err()
				}
			}
		case env := <-msgs:
			ev, ok := decode(env)
			if !ok {
				continue
			}
			if ev.start {
				delete(stopAfter, ev.id)
				if pending[ev.id] {
					continue
				}
				pending[ev.id] = true
				wg.Add(1)
				go func() {
					defer wg.Done()
					info, err := r.inspectStarted(fctx, ev.id, ev.pid)
					select {
					case results <- inspected{ev.id, info, err}:
					case <-fctx.Done():
					}
				}()
				continue
			}
			if pending[ev.id] {
				stopAfter[ev.id] = true
				continue
			}
			if !stopped(ev.id) {
				return ctx.Err()
			}
		}
	}
}

// inspectStarted is Inspect for a task that just started with pid.
func (r *Runtime) inspectStarted(ctx context.Context, id string, pid uint32) (container.Info, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	resp, err := r.cri.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: id}})
	if err != nil {
		return container.Info{}, fmt.Errorf("containerd: inspect %s: %w", id, err)
	}
	for _, c := range resp.GetContainers() {
		if c.GetId() == id {
			return r.info(ctx, c, pid)
		}
	}
	return container.Info{}, fmt.Errorf("containerd: inspect %s: %w", id, ErrNotFound)
}

// reconnect retries connect with exponential backoff and jitter until it
// succeeds (returning the session) or ctx ends (returning nil).
func (r *Runtime) reconnect(ctx context.Context) *session {
	wait := r.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		d := wait/2 + rand.N(wait/2+1)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil
		}
		s, err := r.connect(ctx)
		if err == nil {
			r.log.Info("containerd event stream reconnected", "attempt", attempt, "running", len(s.started))
			return s
		}
		if ctx.Err() != nil {
			return nil
		}
		r.log.Warn("containerd reconnect failed", "attempt", attempt, "retry_in", min(wait*2, r.cfg.MaxBackoff), "err", err)
		wait = min(wait*2, r.cfg.MaxBackoff)
	}
}

// imageInfo is what the CRI says of an image id: a name and the labels
// baked into it.
type imageInfo struct {
	name   string
	labels map[string]string
}

// image returns an image id's name and labels (never nil), from the cache
// or the CRI's verbose ImageStatus. An image the CRI cannot describe has
// no labels: image.label/ selectors then match nothing.
func (r *Runtime) image(ctx context.Context, id string) imageInfo {
	if id == "" {
		return imageInfo{labels: map[string]string{}}
	}
	if im, ok := r.images.get(id); ok {
		return im
	}
	im := imageInfo{labels: map[string]string{}}
	resp, err := r.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: id}, Verbose: true})
	if err != nil || resp.GetImage() == nil {
		r.log.Debug("image not described by the CRI; no image labels", "image", clip(id), "err", err)
		return im
	}
	if tags := resp.GetImage().GetRepoTags(); len(tags) > 0 && checkField(tags[0]) == nil {
		im.name = tags[0]
	}
	var verbose struct {
		ImageSpec struct {
			Config struct {
				Labels map[string]string `json:"Labels"`
			} `json:"config"`
		} `json:"imageSpec"`
	}
	if raw := resp.GetInfo()["info"]; raw != "" && len(raw) <= imageInfoMaxBytes && json.Unmarshal([]byte(raw), &verbose) == nil {
		size := 0
		for k, v := range verbose.ImageSpec.Config.Labels {
			size += len(k) + len(v)
		}
		if len(verbose.ImageSpec.Config.Labels) <= MaxLabels && size <= MaxLabelsBytes {
			for k, v := range verbose.ImageSpec.Config.Labels {
				im.labels[k] = v
			}
		} else {
			r.log.Warn("image labels beyond bounds; none reported", "image", clip(id), "labels", len(verbose.ImageSpec.Config.Labels), "bytes", size)
		}
	}
	r.images.put(id, im)
	return im
}

const (
	imageInfoMaxBytes = 4 << 20
	imageCacheEntries = 256
)

// imageCache remembers images by id (a content address: an entry never
// goes stale), evicting the oldest when full.
type imageCache struct {
	mu    sync.Mutex
	m     map[string]imageInfo
	order []string
}

func (c *imageCache) get(id string) (imageInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	im, ok := c.m[id]
	if ok {
		im.labels = cloneMap(im.labels)
	}
	return im, ok
}

func (c *imageCache) put(id string, im imageInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]imageInfo{}
	}
	if _, ok := c.m[id]; ok {
		return
	}
	for len(c.order) >= imageCacheEntries {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
	im.labels = cloneMap(im.labels)
	c.m[id] = im
	c.order = append(c.order, id)
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
