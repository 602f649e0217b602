// Package security_test attacks a real coffer-server (the built binary on
// 127.0.0.1) with the hostile agent kit of package hostile: one test per
// attack, each showing that the attacker gets nothing it was not meant to
// have and that the attempt leaves a record. README.md lists them.
package security_test

import (
	"path/filepath"
	"testing"

	"coffer/test/security/hostile"
	"coffer/test/testkit"
)

// start runs a coffer-server with args and returns it with an admin client.
func start(t *testing.T, args ...string) (*testkit.Server, *hostile.Admin) {
	t.Helper()
	if testing.Short() {
		t.Skip("security tests run real servers")
	}
	srv := testkit.StartServer(t, filepath.Join(t.TempDir(), "server"), args...)
	return srv, hostile.NewAdmin(t, srv)
}

// enroll enrolls a hostile agent with a fresh join token.
func enroll(t *testing.T, srv *testkit.Server, admin *hostile.Admin, name string) *hostile.Agent {
	t.Helper()
	return hostile.Enroll(t, srv, name, admin.JoinToken(t))
}
