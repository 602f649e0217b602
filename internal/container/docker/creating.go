package docker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	coffercontainer "coffer/internal/container"
)

// ErrNotCreating: the container exists but is not being started (it runs,
// is paused or being removed): an OCI createRuntime hook cannot be running
// for it.
var ErrNotCreating = errors.New("container not being started")

// fullID is a Docker container id: 64 lowercase hex digits.
var fullID = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Creating returns the identity of container id while the engine starts it,
// as an OCI createRuntime hook sees it: the engine reports the container as
// created (its first start), exited (docker start again) or restarting (a
// restart policy), never running. PID is 0: the caller proves the pid
// itself.
//
// It reads the container list filtered by id, never the container's
// inspect: dockerd holds a container's lock for the whole of its start,
// runtime hooks included, so an inspect from a hook would wait until the
// hook timed out; the list reads the engine's lock-free view. Labels are
// split from the image's as in Inspect (the image inspect takes no
// container lock). It returns ErrNotFound or ErrNotCreating (wrapped).
func (r *Runtime) Creating(ctx context.Context, id string) (coffercontainer.Info, error) {
	if !fullID.MatchString(id) {
		return coffercontainer.Info{}, fmt.Errorf("docker: creating %q: not a full container id: %w", clip(id), ErrNotFound)
	}
	f := client.Filters{}
	f.Add("id", id) // a prefix (a pattern, in fact) to the engine: the match is checked below
	res, err := r.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return coffercontainer.Info{}, fmt.Errorf("docker: creating %s: list: %w", id, err)
	}
	var c *container.Summary
	for i := range res.Items {
		if res.Items[i].ID == id {
			c = &res.Items[i]
		}
	}
	if c == nil {
		return coffercontainer.Info{}, fmt.Errorf("docker: creating %s: %w", id, ErrNotFound)
	}
	switch c.State {
	case container.StateCreated, container.StateExited, container.StateRestarting:
	default:
		return coffercontainer.Info{}, fmt.Errorf("docker: creating %s: %w (state %s)", id, ErrNotCreating, clip(string(c.State)))
	}
	info := coffercontainer.Info{ID: c.ID, Image: c.Image, ImageDigest: c.ImageID}
	if len(c.Names) > 0 {
		info.Name = strings.TrimPrefix(c.Names[0], "/")
	}
	image, err := r.imageLabels(ctx, c.ImageID)
	switch {
	case err == nil:
		info.Labels, info.ImageLabels = ownLabels(c.Labels, image), image
	case isNotFound(err):
		// As in Inspect: the labels can no longer be told apart.
		info.Labels, info.ImageLabels = map[string]string{}, maps.Clone(c.Labels)
		if info.ImageLabels == nil {
			info.ImageLabels = map[string]string{}
		}
	default:
		return coffercontainer.Info{}, fmt.Errorf("docker: creating %s: %w %s: %w", id, errImage, c.ImageID, err)
	}
	return info, nil
}

// clip bounds text from the engine in errors.
func clip(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s
}
