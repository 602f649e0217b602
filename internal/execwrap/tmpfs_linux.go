package execwrap

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// onTmpfs returns nil if dir is on a tmpfs (memory, never a disk).
func onTmpfs(dir string) error {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	if fs.Type != unix.TMPFS_MAGIC {
		return fmt.Errorf("%s: %w", dir, errNotTmpfs)
	}
	return nil
}
