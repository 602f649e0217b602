// Package pgtest starts a throwaway PostgreSQL cluster (Debian's
// postgresql package) on 127.0.0.1 for one test, and configures a real
// Vault dev server's database secrets engine against it.
//
// The cluster runs as the postgres user from a temp dir, listens on
// 127.0.0.1 on a free port only (its Unix socket in its own dir), and is
// stopped and removed when the test ends. Without PostgreSQL the test is
// skipped, or fails under COFFER_REQUIRE_TOOLS=1.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"coffer/internal/keystore/vault/vaulttest"
)

// Server is a running PostgreSQL cluster.
type Server struct {
	Port     int
	Password string // the superuser's (postgres) password
	dir      string
	bin      string
}

func bindir() string {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		return ""
	}
	return filepath.Dir(m[len(m)-1])
}

func skip(t testing.TB, msg string) {
	t.Helper()
	msg += " (apt-get install postgresql)"
	if os.Getenv("COFFER_REQUIRE_TOOLS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Start starts a cluster and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := bindir()
	if bin == "" {
		skip(t, "PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/initdb")
	}
	if _, err := exec.LookPath("psql"); err != nil {
		skip(t, "psql is not installed")
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		skip(t, "no postgres user")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if os.Getuid() != 0 && os.Getuid() != uid {
		skip(t, "starting PostgreSQL as the postgres user needs root")
	}
	dir, err := os.MkdirTemp("", "coffer-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 16)
	rand.Read(b)
	s := &Server{Password: hex.EncodeToString(b), dir: dir, bin: bin, Port: freePort(t)}
	pwfile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwfile, []byte(s.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(pwfile, uid, gid)
	data := filepath.Join(dir, "data")
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C", "HOME=" + dir}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
	}
	run("initdb", "-D", data, "-U", "postgres", "--pwfile", pwfile, "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync")
	os.Remove(pwfile)
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off", s.Port, dir)
	run("pg_ctl", "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "start")
	t.Cleanup(func() {
		cmd := exec.Command(filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
		cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		_ = cmd.Run()
	})
	return s
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Query runs sql as user with password over TCP on 127.0.0.1 and returns
// psql's unaligned output (or the error with psql's message).
func (s *Server) Query(user, password, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", user, "-d", "postgres", "-c", sql)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C", "PGPASSWORD=" + password, "PGCONNECT_TIMEOUT=5", "PGSSLMODE=disable"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql as %s: %v: %s", user, err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// Roles returns the login roles whose names start with prefix.
func (s *Server) Roles(t testing.TB, prefix string) []string {
	t.Helper()
	out, err := s.Query("postgres", s.Password, "SELECT rolname FROM pg_roles WHERE rolname LIKE '"+prefix+"%' ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

// CanLogin reports whether user can log in with password (nil) or why not.
func (s *Server) CanLogin(user, password string) error {
	out, err := s.Query(user, password, "SELECT current_user")
	if err != nil {
		return err
	}
	if out != user {
		return fmt.Errorf("logged in as %q, not %q", out, user)
	}
	return nil
}

// RolePrefix is the prefix of the users the configured role creates.
const RolePrefix = "coffer_"

// ConfigureVault mounts the database secrets engine at database/ in vs,
// connects it to s and writes role, whose users (named coffer_...) live
// ttl and at most maxTTL.
func ConfigureVault(t testing.TB, vs *vaulttest.Server, s *Server, role, ttl, maxTTL string) {
	t.Helper()
	if err := vs.Root.Sys().Mount("database", &api.MountInput{Type: "database"}); err != nil && !strings.Contains(err.Error(), "path is already in use") {
		t.Fatalf("mount database: %v", err)
	}
	if _, err := vs.Root.Logical().Write("database/config/pg", map[string]any{
		"plugin_name":       "postgresql-database-plugin",
		"connection_url":    fmt.Sprintf("postgresql://{{username}}:{{password}}@127.0.0.1:%d/postgres?sslmode=disable", s.Port),
		"username":          "postgres",
		"password":          s.Password,
		"allowed_roles":     "*",
		"verify_connection": true,
		"username_template": RolePrefix + `{{random 20 | lowercase}}`,
	}); err != nil {
		t.Fatalf("database/config/pg: %v", err)
	}
	if _, err := vs.Root.Logical().Write("database/roles/"+role, map[string]any{
		"db_name":             "pg",
		"creation_statements": []string{`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`},
		"default_ttl":         ttl,
		"max_ttl":             maxTTL,
	}); err != nil {
		t.Fatalf("database/roles/%s: %v", role, err)
	}
}
