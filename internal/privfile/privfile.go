// Package privfile opens files that must be private to their owner: key
// files, which a group or other users must not be able to read or write.
package privfile

import (
	"fmt"
	"os"
)

// Open opens path for reading if it is a regular file that only its owner
// may access (mode 0600 or 0400). Errors name the path and, for a mode that
// is too open, the command that fixes it; file-system errors are wrapped.
func Open(path string) (*os.File, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		f.Close()
		return nil, nil, fmt.Errorf("%s has mode %04o and may be read by others; run: chmod 600 %s", path, perm, path)
	}
	return f, fi, nil
}
