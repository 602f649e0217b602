package tmpfs

import (
	"context"
	"fmt"
	"path"

	"coffer/internal/container"
	"coffer/internal/secret"
)

// ApplyRoot is Apply for a container whose process has not entered its root
// file system yet: an OCI createRuntime hook runs after the runtime set up
// the container's mounts and before pivot_root, so the container's root is
// still the directory root (e.g. <bundle>/rootfs) inside its mount
// namespace. The target is root joined with the configured directory; the
// tmpfs mounted there becomes the directory once the container pivots into
// root. The caller must know the process is held before pivot_root (the
// hook has not returned); otherwise the files land outside the container's
// view. root must be a clean absolute path other than "/".
func (d *Deliverer) ApplyRoot(ctx context.Context, c container.Info, root string, want []secret.File) error {
	if err := validateDir(root); err != nil {
		return fmt.Errorf("tmpfs: apply to %s: root: %w", c.ID, err)
	}
	return d.apply(ctx, c, path.Join(root, d.cfg.Dir), want)
}
