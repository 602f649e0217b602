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
// and the agent reads the label itself. Only the container's own label
// counts (never its image's); it can only make the container's own start
// stricter.
const RequireLabel = "coffer.require-secrets"

// DockerEngine is what the server needs of the Docker runtime
// (*docker.Runtime): the identity of a container being started, read
// without the container's lock.
type DockerEngine interface {
	Creating(ctx context.Context, id string) (container.Info, error)
}

// Docker is the server's Runtime on a Docker host: the identity comes
// from the engine's container list by id (docker.Runtime.Creating), and
// the container's own label coffer.require-secrets=true stands for the
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
	if info.Labels[RequireLabel] == "true" {
		c.PodAnnotations = map[string]string{RequireAnnotation: "true"}
	}
	return c, nil
}
