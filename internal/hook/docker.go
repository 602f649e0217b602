package hook

import (
	"context"

	"coffer/internal/container"
	"coffer/internal/container/containerd"
)

// RequireLabel is the Docker container label that makes a container
// started through the runtime wrapper (`docker run --runtime coffer`,
// coffer-agent runc) fail-closed, like the pod annotation
// RequireAnnotation on Kubernetes: the wrapper turns the label into that
// OCI annotation, which the hook reads when it cannot reach the agent,
// and the agent reads the label itself (RequiredByLabels).
const RequireLabel = "coffer.require-secrets"

// RequiredByLabels reports whether a Docker container is labelled
// coffer.require-secrets=true, as Docker merges labels: the container's
// own label, else its image's. Unlike the labels bindings and
// --only-labels read, the image's counts here: it can only make its
// containers' starts stricter, and an operator's label equal to the
// image's (which Docker cannot tell apart, see docker.ownLabels) must not
// be lost. An operator's coffer.require-secrets=false overrides an
// image's true.
func RequiredByLabels(info container.Info) bool {
	if v, ok := info.Labels[RequireLabel]; ok {
		return v == "true"
	}
	return info.ImageLabels[RequireLabel] == "true"
}

// DockerEngine is what the server needs of the Docker runtime
// (*docker.Runtime): the identity of a container being started, read
// without the container's lock.
type DockerEngine interface {
	Creating(ctx context.Context, id string) (container.Info, error)
}

// Docker is the server's Runtime on a Docker host: the identity comes
// from the engine's container list by id (docker.Runtime.Creating), and
// the label coffer.require-secrets=true (RequiredByLabels) stands for the
// pod annotation. Docker has no pod sandbox: a request that names one in
// its annotations is refused.
type Docker struct{ Engine DockerEngine }

var _ Runtime = Docker{}

// Creating implements Runtime.
func (d Docker) Creating(ctx context.Context, id string) (containerd.Creating, error) {
	info, err := d.Engine.Creating(ctx, id)
	if err != nil {
		return containerd.Creating{}, err
	}
	c := containerd.Creating{Info: info}
	if RequiredByLabels(info) {
		c.PodAnnotations = map[string]string{RequireAnnotation: "true"}
	}
	return c, nil
}
