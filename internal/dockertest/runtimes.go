package dockertest

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

// StartDaemonWithRuntimes is StartDaemon with further OCI runtimes
// registered (dockerd --add-runtime name=path), which `docker run
// --runtime name` selects. The shared engine is never reconfigured: a
// test that needs a runtime gets a private daemon.
func StartDaemonWithRuntimes(t testing.TB, runtimes map[string]string) *Daemon {
	t.Helper()
	var extra []string
	for _, name := range slices.Sorted(maps.Keys(runtimes)) {
		if strings.ContainsAny(name, "=") || name == "" {
			t.Fatalf("dockertest: runtime name %q", name)
		}
		extra = append(extra, "--add-runtime", name+"="+runtimes[name])
	}
	return startDaemon(t, extra)
}
