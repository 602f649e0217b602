// Package tmpfs is Coffer's real Deliverer: it writes each container's
// secrets into a tmpfs mounted inside that container's mount namespace
// (default /run/secrets), mounted nosuid,nodev,noexec,noswap and size-capped,
// so values live only in memory that cannot be swapped out.
//
// # The helper process
//
// Entering another mount namespace (setns) taints the calling thread, and
// needs a thread that shares no filesystem state with others. The agent
// therefore never calls setns: a Deliverer starts one long-lived helper, a
// re-exec of its own binary (Config.Exe) in which Init serves requests, and
// talks to it over a unix socketpair with length-prefixed binary frames.
// Every binary that uses a Deliverer must call Init first thing in main (and
// in TestMain). The helper serves each request on a fresh OS thread locked
// to its goroutine, which unshares CLONE_FS, enters the container's mount
// namespace through a pidfd and dies with the goroutine. Requests for
// different containers run concurrently; for one container, one at a time.
// A helper that dies is restarted by the next Apply.
//
// # Safety
//
// Before entering, the helper pins the container's init process with a pidfd
// and checks its cgroup names the container id, so a reused pid is refused
// (ErrContainerGone). Inside, it walks the target path from the container's
// root without following symlinks (openat2 RESOLVE_NO_SYMLINKS), creating
// missing directories; if the target is already a tmpfs mount it is used
// when it is private to the container (its filesystem is mounted neither in
// the runtime's, the host's nor the agent's mount namespace, and it has no
// propagation peers), refused with ErrSharedTmpfs otherwise (a shared named
// volume, a host tmpfs bind-mounted in); with no tmpfs there, a new one is
// attached by fd (fsopen, fsmount, move_mount). If
// the kernel rejects noswap, the mount goes ahead only while no swap is
// active (with a warning) and fails closed with deliver.ErrNoSwapProtection
// otherwise. It never falls back to a directory on disk. Files are written
// under temporary names, owned and moded, then renamed over their final
// names. A manifest file (.coffer, root 0600, names and versions only) lists
// what Coffer manages so Apply is idempotent across restarts and never
// touches files it did not create.
package tmpfs

import (
	"errors"
	"log/slog"
	"os"
)

// Sentinel errors, returned wrapped by Apply.
var (
	// ErrContainerGone: the container's process is gone or its pid now
	// belongs to another process.
	ErrContainerGone = errors.New("container process gone")
	// ErrUnsafePath: the target path holds a symlink or non-directory, or
	// sits on a shared mount; nothing was written.
	ErrUnsafePath = errors.New("unsafe target path")
	// ErrSharedTmpfs: the target is a tmpfs that is not private to the
	// container (a shared named volume, a bind mount of a host tmpfs): the
	// host or other containers could read what is written there, so
	// nothing was written.
	ErrSharedTmpfs = errors.New("target is a shared tmpfs")
	// ErrInvalid: bad input (file names, modes, sizes, container id or pid).
	ErrInvalid = errors.New("invalid delivery request")
	// ErrHelper: the helper process failed or died; the request may be
	// retried (a new helper starts on the next Apply).
	ErrHelper = errors.New("delivery helper failed")
	// ErrClosed: the Deliverer was closed.
	ErrClosed = errors.New("deliverer closed")
)

// Defaults.
const (
	DefaultDir       = "/run/secrets"
	DefaultSizeBytes = 4 << 20
)

// Config tunes a Deliverer. The zero value is usable.
type Config struct {
	// Dir is the directory, inside each container, that receives the
	// files; DefaultDir if empty.
	Dir string
	// SizeBytes caps each tmpfs; DefaultSizeBytes if zero.
	SizeBytes int64
	// Logger receives warnings (noswap fallback, rebuilt manifests) and
	// errors; nil discards. It never receives values.
	Logger *slog.Logger
	// Exe is the binary started as the helper; "/proc/self/exe" if empty.
	// It must call Init first thing in main.
	Exe string
}

func (c *Config) setDefaults() error {
	if c.Dir == "" {
		c.Dir = DefaultDir
	}
	if err := validateDir(c.Dir); err != nil {
		return err
	}
	if c.SizeBytes == 0 {
		c.SizeBytes = DefaultSizeBytes
	}
	if c.SizeBytes < 4096 {
		return errors.Join(ErrInvalid, errors.New("SizeBytes below 4096"))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Exe == "" {
		c.Exe = "/proc/self/exe"
	}
	if _, err := os.Stat(c.Exe); err != nil {
		return errors.Join(ErrInvalid, err)
	}
	return nil
}
