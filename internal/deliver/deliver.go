// Package deliver defines how secrets reach a container: the Deliverer seam.
package deliver

import (
	"context"
	"errors"

	"coffer/internal/container"
	"coffer/internal/secret"
)

// ErrNoSwapProtection is returned (wrapped) when a tmpfs cannot be mounted
// noswap while swap is on: the deliverer fails closed rather than risk a value
// reaching disk.
var ErrNoSwapProtection = errors.New("tmpfs noswap unsupported while swap is enabled")

// Deliverer puts exactly the wanted files into one container's memory.
// Implementations are safe for concurrent use on different containers.
type Deliverer interface {
	// Apply makes the target directory of container c hold exactly want:
	// new files are added, changed ones replaced atomically, files the
	// deliverer put there earlier but no longer wanted are removed.
	// Apply is idempotent. It never writes a value to the host's disk.
	Apply(ctx context.Context, c container.Info, want []secret.File) error
	// Release forgets container c (it stopped); nothing is left behind.
	Release(ctx context.Context, c container.Info) error
}
