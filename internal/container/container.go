// Package container describes what the agent knows of a container, as told by
// the container runtime (never by the container itself), and the Runtime seam
// through which it learns it.
package container

import "context"

// Info identifies one container. Every field comes from the runtime.
//
// Labels and ImageLabels are kept apart because they are chosen by different
// people: Labels by whoever ran the container (the operator), ImageLabels by
// whoever built the image, who may be a third party. Only Labels may decide
// what a container is given (bindings, an agent's --only-labels).
//
// Docker merges an image's labels into its containers' (Config.Labels), so
// the Docker runtime computes Labels as the merged set minus the labels the
// image carries with the same value: a `--label` with an image label's key
// but another value is the operator's and stays; one with the same key and
// the same value cannot be told from the image's and counts as the image's
// (an operator who needs it must pick a value the image does not carry). If
// the image is gone (deleted after the container was created), nothing can
// be told apart: Labels is empty and ImageLabels holds the merged set.
type Info struct {
	ID          string            // full runtime id
	Name        string            // name without a leading '/'
	Labels      map[string]string // the container's own labels (docker run --label), without the image's; never nil from a runtime
	ImageLabels map[string]string // labels baked into the image (LABEL); chosen by the image's author
	Image       string            // image reference as the container was created, e.g. "registry/x:1.2"
	ImageDigest string            // "sha256:..." of the image (config digest or repo digest)
	PID         int               // host pid of the container's init process; 0 if not running
	Pod         *Pod              // its Kubernetes pod (containerd runtime); nil elsewhere
}

// Pod is a container's Kubernetes pod as the node's runtime knows it (the
// CRI sandbox's metadata), and the container's name in the pod spec. The
// server checks it against the API server (docs/kubernetes.md).
type Pod struct {
	UID, Namespace, Name string
	Container            string
}

// EventKind says what happened to a container.
type EventKind int

const (
	// Started: a container is running (sent for every running container
	// after each (re)list, then for every start).
	Started EventKind = iota + 1
	// Stopped: a container died, stopped or was destroyed.
	Stopped
	// Synced: the runtime (re)listed its running containers; Running holds
	// all their ids. Containers the agent serves that are not in it are gone.
	Synced
)

// Event is one change seen in the runtime.
type Event struct {
	Kind    EventKind
	Info    Info     // for Started (full Info) and Stopped (at least ID)
	Running []string // for Synced
}

// Runtime is what the agent needs of a container runtime (Docker, containerd).
type Runtime interface {
	// Watch lists the running containers (a Started event for each, then
	// Synced) and then follows start and stop events until ctx ends. When
	// the runtime's connection is lost, Watch reconnects by itself and lists
	// again. The channel closes when ctx is done.
	Watch(ctx context.Context) (<-chan Event, error)
	// Inspect returns a running container's Info.
	Inspect(ctx context.Context, id string) (Info, error)
}

// SendTo returns a function that sends an event on out, or reports false
// once ctx is done: what a Runtime's Watch loop sends with.
func SendTo(ctx context.Context, out chan<- Event) func(Event) bool {
	return func(ev Event) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
}

// Announce sends a Started event for each listed container, then Synced,
// and returns the set of ids announced; ok is false if send gave up.
func Announce(infos []Info, send func(Event) bool) (known map[string]bool, ok bool) {
	known = make(map[string]bool, len(infos))
	running := make([]string, 0, len(infos))
	for _, info := range infos {
		known[info.ID] = true
		running = append(running, info.ID)
		if !send(Event{Kind: Started, Info: info}) {
			return nil, false
		}
	}
	return known, send(Event{Kind: Synced, Running: running})
}
