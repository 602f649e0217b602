package docker

import (
	"context"
	"fmt"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"coffer/internal/container"
)

var _ container.Signaler = (*Runtime)(nil)

// Signal implements container.Signaler with the engine's kill endpoint
// (POST /containers/{id}/kill?signal=SIGHUP), which signals the container's
// main process; a container that does not run gives an error wrapping
// ErrNotFound or ErrNotRunning.
func (r *Runtime) Signal(ctx context.Context, id, sig string) error {
	if _, err := r.cli.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: sig}); err != nil {
		if isNotFound(err) {
			return fmt.Errorf("docker: signal %s %s: %w", sig, id, ErrNotFound)
		}
		if cerrdefs.IsConflict(err) {
			return fmt.Errorf("docker: signal %s %s: %w", sig, id, ErrNotRunning)
		}
		return fmt.Errorf("docker: signal %s %s: %w", sig, id, err)
	}
	return nil
}
