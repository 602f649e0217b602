package containerd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"coffer/internal/container"
)

// ErrNotCreating: the container exists but is not being created (it runs,
// or exited): an OCI createRuntime hook cannot be running for it.
var ErrNotCreating = errors.New("container not being created")

// Creating is what the CRI says of a container whose task is being made.
type Creating struct {
	Info      container.Info // PID 0: the caller proves the pid itself
	SandboxID string         // the container's pod sandbox, as the CRI records it
	// PodAnnotations are the pod sandbox's annotations (the pod's own, as
	// the kubelet passed them), for per-pod settings such as
	// coffer/require-secrets.
	PodAnnotations map[string]string
}

// Creating returns the identity of container id while the CRI is creating
// its task (CRI state CONTAINER_CREATED: an OCI createRuntime hook runs
// then), from the CRI only: the container by its id, its pod by the
// sandbox id the CRI recorded for it (never one a caller names). It uses
// ListContainers and ListPodSandbox, which containerd answers from memory
// (PodSandboxStatus waits on the busy shim and is not used). It returns
// ErrNotFound or ErrNotCreating (wrapped).
func (r *Runtime) Creating(ctx context.Context, id string) (Creating, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	if err := checkField(id); err != nil || id == "" {
		return Creating{}, fmt.Errorf("containerd: creating %s: %w", clip(id), ErrNotFound)
	}
	resp, err := r.cri.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: id}})
	if err != nil {
		return Creating{}, fmt.Errorf("containerd: creating %s: %w", clip(id), err)
	}
	var c *runtimeapi.Container
	for _, x := range resp.GetContainers() {
		if x.GetId() == id { // the filter also takes prefixes
			c = x
		}
	}
	if c == nil {
		return Creating{}, fmt.Errorf("containerd: creating %s: %w", clip(id), ErrNotFound)
	}
	if c.GetState() != runtimeapi.ContainerState_CONTAINER_CREATED {
		return Creating{}, fmt.Errorf("containerd: creating %s: %w (state %s)", clip(id), ErrNotCreating, c.GetState())
	}
	sbID := c.GetPodSandboxId()
	sbs, err := r.cri.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{Id: sbID}})
	if err != nil {
		return Creating{}, fmt.Errorf("containerd: creating %s: pod sandbox %s: %w", clip(id), clip(sbID), err)
	}
	var sb *runtimeapi.PodSandbox
	for _, x := range sbs.GetItems() {
		if x.GetId() == sbID {
			sb = x
		}
	}
	if sb == nil {
		return Creating{}, fmt.Errorf("containerd: creating %s: pod sandbox %s: %w", clip(id), clip(sbID), ErrNotFound)
	}
	pd, err := podOf(sb)
	if err != nil {
		return Creating{}, fmt.Errorf("containerd: creating %s: %w", clip(id), err)
	}
	name := c.GetMetadata().GetName()
	image := c.GetImage().GetUserSpecifiedImage()
	if image == "" {
		image = c.GetImage().GetImage()
	}
	for _, f := range []string{name, image} {
		if err := checkField(f); err != nil {
			return Creating{}, fmt.Errorf("containerd: creating %s: %w: %w", clip(id), errIdentity, err)
		}
	}
	info := container.Info{
		ID:          id,
		Name:        pd.namespace + "/" + pd.name + "/" + name,
		Labels:      labelsOf(pd, name),
		ImageDigest: imageDigest(c),
		Image:       image,
		Pod:         podRef(pd, name),
	}
	im := r.image(ctx, info.ImageDigest)
	info.ImageLabels = im.labels
	if strings.HasPrefix(info.Image, "sha256:") && im.name != "" {
		info.Image = im.name
	}
	return Creating{Info: info, SandboxID: sbID, PodAnnotations: maps.Clone(sb.GetAnnotations())}, nil
}
