//go:build !linux

package execwrap

import "fmt"

// onTmpfs: a record is written only on Linux, where the agent reads it.
func onTmpfs(dir string) error {
	return fmt.Errorf("%s: %w (records are written on Linux only)", dir, errNotTmpfs)
}
