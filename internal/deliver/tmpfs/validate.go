package tmpfs

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	"coffer/internal/secret"
)

// containerIDPattern is what a runtime id may look like: long enough that
// finding it in a process's cgroup path identifies the container.
var containerIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{11,127}$`)

// validateDir checks a target directory: absolute, clean, not "/".
func validateDir(dir string) error {
	if !strings.HasPrefix(dir, "/") || path.Clean(dir) != dir || dir == "/" || len(dir) > 1024 {
		return fmt.Errorf("%w: directory %q: want a clean absolute path other than /", ErrInvalid, dir)
	}
	for _, c := range strings.Split(dir[1:], "/") {
		if c == "." || c == ".." {
			return fmt.Errorf("%w: directory %q", ErrInvalid, dir)
		}
	}
	return nil
}

// validateRequest checks everything the helper relies on; the agent checks
// the same before sending, the helper again after receiving.
func validateRequest(r *request) error {
	if !containerIDPattern.MatchString(r.ContainerID) {
		return fmt.Errorf("%w: container id %q", ErrInvalid, r.ContainerID)
	}
	if r.PID <= 1 || r.PID > 1<<22 {
		return fmt.Errorf("%w: pid %d", ErrInvalid, r.PID)
	}
	if err := validateDir(r.Dir); err != nil {
		return err
	}
	if r.SizeBytes < 4096 {
		return fmt.Errorf("%w: tmpfs size %d below 4096 bytes", ErrInvalid, r.SizeBytes)
	}
	seen := make(map[string]bool, len(r.Files))
	var total uint64
	for _, f := range r.Files {
		if err := secret.ValidateFileName(f.Name); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if seen[f.Name] {
			return fmt.Errorf("%w: file %q wanted twice", ErrInvalid, f.Name)
		}
		seen[f.Name] = true
		if f.Mode&^0o777 != 0 {
			return fmt.Errorf("%w: file %q: mode %#o has bits other than permissions", ErrInvalid, f.Name, f.Mode)
		}
		if f.UID > 1<<31-2 || f.GID > 1<<31-2 {
			return fmt.Errorf("%w: file %q: owner %d:%d", ErrInvalid, f.Name, f.UID, f.GID)
		}
		total += uint64(len(f.Value))
	}
	if total > r.SizeBytes {
		return fmt.Errorf("%w: %d bytes of values exceed the tmpfs size cap of %d", ErrInvalid, total, r.SizeBytes)
	}
	return nil
}
