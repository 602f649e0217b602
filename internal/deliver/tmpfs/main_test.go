package tmpfs_test

import (
	"os"
	"testing"

	"coffer/internal/deliver/tmpfs"
)

func TestMain(m *testing.M) {
	tmpfs.Init() // in the helper process, serves and exits
	os.Exit(m.Run())
}
