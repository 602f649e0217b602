package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/internal/dockertest"
)

// A DSN rendered from two secrets on the server, bound with
// --template-file, delivered into a real container; rotating one input
// swaps the rendered file in place; the inputs' values never reach the
// container as files of their own, nor logs or docker inspect.
func TestTemplatedFileInDocker(t *testing.T) {
	s := newStack(t)
	pw1, pw2 := "tpl-pw1-"+randID(), "tpl-pw2-"+randID()
	s.srv.MustCLI(t, "app", "secret", "put", "e2e/db-user")
	s.srv.MustCLI(t, pw1, "secret", "put", "e2e/db-password")
	tf := filepath.Join(t.TempDir(), "dsn.tmpl")
	os.WriteFile(tf, []byte(`postgres://{{ secret "e2e/db-user" }}:{{ secret "e2e/db-password" | urlquery }}@db:5432/app`), 0o600)
	s.srv.MustCLI(t, "", "bind", "create", "e2e-dsn", "--template-file", tf, "--secret", "e2e/dsn", "--selector", "app="+s.label, "--file", "db.url")
	c := s.run(dockertest.RunOpts{Labels: map[string]string{"app": s.label}})
	s.waitContent(c.ID, "db.url", "postgres://app:"+pw1+"@db:5432/app")

	s.srv.MustCLI(t, pw2, "secret", "put", "e2e/db-password")
	s.waitContent(c.ID, "db.url", "postgres://app:"+pw2+"@db:5432/app")
	out, _ := s.docker.Exec(t, c.ID, "ls", "/run/secrets")
	if strings.TrimSpace(out) != "db.url" {
		t.Fatalf("files in the container: %q (the inputs must not be delivered)", out)
	}
	show := s.srv.MustCLI(t, "", "secret", "show", "e2e/dsn")
	if !strings.Contains(show, "rendered from e2e/db-password, e2e/db-user") {
		t.Fatalf("secret show:\n%s", show)
	}
	// An input deleted: the file leaves the container.
	s.srv.MustCLI(t, "", "secret", "rm", "e2e/db-user")
	s.waitAbsent(c.ID, "db.url")
	inspect, _ := s.docker.Docker(t, "inspect", c.ID)
	for _, v := range []string{pw1, pw2} {
		if strings.Contains(inspect, v) || strings.Contains(s.srv.Logs(), v) || strings.Contains(s.agent.Logs(), v) {
			t.Error("an input's value in docker inspect or logs")
		}
		if hits := grepTree(s.dir, v); len(hits) > 0 {
			t.Errorf("a value in clear on disk: %v", hits)
		}
	}
}
