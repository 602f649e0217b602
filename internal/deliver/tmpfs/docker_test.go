package tmpfs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/internal/container"
	"coffer/internal/deliver"
	"coffer/internal/deliver/tmpfs"
	"coffer/internal/dockertest"
	"coffer/internal/secret"
)

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func newDeliverer(t testing.TB, cfg tmpfs.Config) *tmpfs.Deliverer {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	d, err := tmpfs.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func infoOf(c dockertest.ContainerRef) container.Info {
	return container.Info{ID: c.ID, Name: c.Name, PID: c.PID}
}

func randValue(t testing.TB, n int) secret.Value {
	t.Helper()
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return secret.Value(hex.EncodeToString(b))
}

func file(name string, version uint64, mode os.FileMode, uid, gid int, v secret.Value) secret.File {
	return secret.File{Secret: "app/" + name, Version: version, Name: name, Mode: mode, UID: uid, GID: gid, Value: v}
}

func exec(t testing.TB, env *dockertest.Env, id string, cmd ...string) string {
	t.Helper()
	out, err := env.Exec(t, id, cmd...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// mountLine returns the container's mountinfo lines for mount point dir.
func mountLines(t testing.TB, pid int, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "mountinfo"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			out = append(out, l)
		}
	}
	return out
}

func TestApplyDeliversIntoNoswapTmpfs(t *testing.T) {
	env := dockertest.Require(t)
	t.Parallel()
	c := env.Run(t, dockertest.RunOpts{})
	d := newDeliverer(t, tmpfs.Config{})
	ctx := context.Background()

	db, api := randValue(t, 32), randValue(t, 64)
	want := []secret.File{file("db-password", 1, 0o400, 1000, 1001, db), file("api-key", 3, 0o440, 0, 0, api)}
	if err := d.Apply(ctx, infoOf(c), want); err != nil {
		t.Fatal(err)
	}
	if got := exec(t, env, c.ID, "cat", "/run/secrets/db-password"); got != string(db) {
		t.Fatalf("db-password in container = %q", got)
	}
	if got := exec(t, env, c.ID, "cat", "/run/secrets/api-key"); got != string(api) {
		t.Fatalf("api-key in container = %q", got)
	}
	got := exec(t, env, c.ID, "stat", "-c", "%n %a %u %g %F", "/run/secrets/db-password", "/run/secrets/api-key", "/run/secrets", "/run/secrets/.coffer")
	wantStat := "/run/secrets/db-password 400 1000 1001 regular file\n" +
		"/run/secrets/api-key 440 0 0 regular file\n" +
		"/run/secrets 711 0 0 directory\n" +
		"/run/secrets/.coffer 600 0 0 regular file\n"
	if got != wantStat {
		t.Fatalf("stat:\n%s\nwant:\n%s", got, wantStat)
	}
	lines := mountLines(t, c.PID, "/run/secrets")
	if len(lines) != 1 {
		t.Fatalf("mounts at /run/secrets: %q", lines)
	}
	fields := strings.Fields(lines[0])
	perMount := fields[5]
	super := fields[len(fields)-1]
	for _, o := range []string{"nosuid", "nodev", "noexec"} {
		if !strings.Contains(","+perMount+",", ","+o+",") {
			t.Errorf("mount options %q lack %s", perMount, o)
		}
	}
	for _, o := range []string{"noswap", "size=4096k", "mode=711"} {
		if !strings.Contains(","+super+",", ","+o+",") {
			t.Errorf("tmpfs options %q lack %s", super, o)
		}
	}
	if !strings.Contains(lines[0], " - tmpfs ") {
		t.Errorf("not a tmpfs: %s", lines[0])
	}
	// The manifest holds names and versions, never values.
	manifest := exec(t, env, c.ID, "cat", "/run/secrets/.coffer")
	if strings.Contains(manifest, string(db)) || !strings.Contains(manifest, `"secret":"app/db-password"`) {
		t.Fatalf("manifest = %s", manifest)
	}
	// A non-root user can read its own file by name but cannot list.
	if _, err := env.Docker(t, "exec", "-u", "1000:1001", c.ID, "ls", "/run/secrets"); err == nil {
		t.Error("uid 1000 could list /run/secrets")
	}
	if out, err := env.Docker(t, "exec", "-u", "1000:1001", c.ID, "cat", "/run/secrets/db-password"); err != nil || out != string(db) {
		t.Errorf("uid 1000 cannot read its file: %v", err)
	}
	if _, err := env.Docker(t, "exec", "-u", "1000:1001", c.ID, "cat", "/run/secrets/api-key"); err == nil {
		t.Error("uid 1000 could read a root 0440 file")
	}
}

func TestRotateRevokeIdempotent(t *testing.T) {
	env := dockertest.Require(t)
	t.Parallel()
	c := env.Run(t, dockertest.RunOpts{})
	d := newDeliverer(t, tmpfs.Config{})
	ctx := context.Background()
	info := infoOf(c)
	inode := func(name string) string {
		return exec(t, env, c.ID, "stat", "-c", "%i", "/run/secrets/"+name)
	}

	v1, v2, k := randValue(t, 40), randValue(t, 40), randValue(t, 16)
	if err := d.Apply(ctx, info, []secret.File{file("db", 1, 0o400, 0, 0, v1), file("key", 1, 0o400, 0, 0, k)}); err != nil {
		t.Fatal(err)
	}
	dbInode, keyInode := inode("db"), inode("key")

	// Same wants again, and from a fresh Deliverer (agent restart): nothing rewritten.
	if err := d.Apply(ctx, info, []secret.File{file("db", 1, 0o400, 0, 0, v1), file("key", 1, 0o400, 0, 0, k)}); err != nil {
		t.Fatal(err)
	}
	d2 := newDeliverer(t, tmpfs.Config{})
	if err := d2.Apply(ctx, info, []secret.File{file("db", 1, 0o400, 0, 0, v1), file("key", 1, 0o400, 0, 0, k)}); err != nil {
		t.Fatal(err)
	}
	if inode("db") != dbInode || inode("key") != keyInode {
		t.Fatal("idempotent Apply rewrote files")
	}

	// A file Coffer did not create stays.
	exec(t, env, c.ID, "sh", "-c", "echo mine > /run/secrets/own")

	// Rotate db, revoke key.
	if err := d.Apply(ctx, info, []secret.File{file("db", 2, 0o400, 0, 0, v2)}); err != nil {
		t.Fatal(err)
	}
	if got := exec(t, env, c.ID, "cat", "/run/secrets/db"); got != string(v2) {
		t.Fatalf("db after rotation = %q", got)
	}
	if inode("db") == dbInode {
		t.Fatal("rotation did not replace the file")
	}
	if out, err := env.Exec(t, c.ID, "ls", "/run/secrets/key"); err == nil {
		t.Fatalf("revoked key still there: %q", out)
	}
	// A mode change alone rewrites.
	if err := d.Apply(ctx, info, []secret.File{file("db", 2, 0o440, 0, 0, v2)}); err != nil {
		t.Fatal(err)
	}
	if got := exec(t, env, c.ID, "stat", "-c", "%a", "/run/secrets/db"); got != "440\n" {
		t.Fatalf("mode after change = %q", got)
	}
	// Revoke all.
	if err := d.Apply(ctx, info, nil); err != nil {
		t.Fatal(err)
	}
	if got := exec(t, env, c.ID, "ls", "-A", "/run/secrets"); got != ".coffer\nown\n" {
		t.Fatalf("after revoking all: %q", got)
	}
	if err := d.Release(ctx, info); err != nil {
		t.Fatal(err)
	}
}

func TestRotationIsAtomic(t *testing.T) {
	env := dockertest.Require(t)
	t.Parallel()
	c := env.Run(t, dockertest.RunOpts{})
	d := newDeliverer(t, tmpfs.Config{})
	ctx := context.Background()
	a := secret.Value(strings.Repeat("a", 256<<10))
	b := secret.Value(strings.Repeat("b", 256<<10))
	if err := d.Apply(ctx, infoOf(c), []secret.File{file("big", 1, 0o400, 0, 0, a)}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for v := uint64(2); ; v++ {
			select {
			case <-stop:
				return
			default:
			}
			val := a
			if v%2 == 0 {
				val = b
			}
			if err := d.Apply(ctx, infoOf(c), []secret.File{file("big", v, 0o400, 0, 0, val)}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	out := exec(t, env, c.ID, "sh", "-c", "i=0; while [ $i -lt 200 ]; do cat /run/secrets/big; echo; i=$((i+1)); done")
	close(stop)
	wg.Wait()
	seen := map[byte]int{}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if len(line) != len(a) || strings.Count(line, line[:1]) != len(line) {
			t.Fatalf("reader saw a torn value: %d bytes, starts %q", len(line), line[:min(8, len(line))])
		}
		seen[line[0]]++
	}
	t.Logf("reads: %v", seen)
}

func TestReusesContainerTmpfs(t *testing.T) {
	env := dockertest.Require(t)
	t.Parallel()
	c := env.Run(t, dockertest.RunOpts{Tmpfs: []string{"/run/secrets:size=1m"}})
	d := newDeliverer(t, tmpfs.Config{})
	v := randValue(t, 32)
	if err := d.Apply(context.Background(), infoOf(c), []secret.File{file("tok", 1, 0o400, 0, 0, v)}); err != nil {
		t.Fatal(err)
	}
	if got := exec(t, env, c.ID, "cat", "/run/secrets/tok"); got != string(v) {
		t.Fatalf("tok = %q", got)
	}
	lines := mountLines(t, c.PID, "/run/secrets")
	if len(lines) != 1 || !strings.Contains(lines[0], "size=1024k") {
		t.Fatalf("want the container's own tmpfs only, got %q", lines)
	}
}

func TestNothingOnHostDisk(t *testing.T) {
	env := dockertest.Require(t)
	t.Parallel()
	c := env.Run(t, dockertest.RunOpts{})
	d := newDeliverer(t, tmpfs.Config{})
	v := randValue(t, 48)
	if err := d.Apply(context.Background(), infoOf(c), []secret.File{file("db", 1, 0o400, 0, 0, v)}); err != nil {
		t.Fatal(err)
	}
	if got := exec(t, env, c.ID, "cat", "/run/secrets/db"); got != string(v) {
		t.Fatal("not delivered")
	}
	exec(t, env, c.ID, "sync")
	root, err := env.Docker(t, "info", "--format", "{{.DockerRootDir}}")
	if err != nil {
		t.Fatal(err)
	}
	files := 0
	err = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil || !de.Type().IsRegular() {
			return nil // vanished or special: skip
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		files++
		if bytes.Contains(b, v) {
			t.Errorf("value found on the host's disk in %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The host's view of the container's root holds an empty mount point:
	// the tmpfs exists only in the container's mount namespace.
	merged, err := env.Docker(t, "inspect", "--format", "{{.GraphDriver.Data.MergedDir}}", c.ID)
	if err == nil && merged != "" {
		entries, err := os.ReadDir(filepath.Join(merged, "run", "secrets"))
		if err != nil || len(entries) != 0 {
			t.Errorf("host view of /run/secrets: %v entries, err %v", len(entries), err)
		}
	}
	t.Logf("searched %d files under %s", files, root)
}

func TestRefusesSymlinksAndNonDirectories(t *testing.T) {
	env := dockertest.Require(t)
	t.Parallel()
	cases := []struct {
		name  string
		setup string
	}{
		{"target is a symlink", "mkdir /tmp/target && ln -s /tmp/target /run/secrets"},
		{"parent is a symlink", "mkdir -p /tmp/target && rm -rf /run && ln -s /tmp/target /run"},
		{"target is absolute host-ish symlink", "ln -s /proc/1/root/tmp /run/secrets"},
		{"target is a file", "echo x > /run/secrets"},
	}
	d := newDeliverer(t, tmpfs.Config{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := env.Run(t, dockertest.RunOpts{Cmd: []string{"sh", "-c", tc.setup + " && touch /tmp/ready && exec sleep 3600"}})
			deadline := time.Now().Add(10 * time.Second)
			for {
				if _, err := env.Exec(t, c.ID, "test", "-e", "/tmp/ready"); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("setup did not finish")
				}
				time.Sleep(50 * time.Millisecond)
			}
			err := d.Apply(context.Background(), infoOf(c), []secret.File{file("db", 1, 0o400, 0, 0, randValue(t, 16))})
			if !errors.Is(err, tmpfs.ErrUnsafePath) {
				t.Fatalf("Apply err = %v, want ErrUnsafePath", err)
			}
			if out, _ := env.Exec(t, c.ID, "ls", "-A", "/tmp"); strings.Contains(out, "db") {
				t.Fatalf("file landed behind the symlink: %q", out)
			}
			if lines := mountLines(t, c.PID, "/tmp/target"); len(lines) != 0 {
				t.Fatalf("mounted behind the symlink: %q", lines)
			}
			if lines := mountLines(t, c.PID, "/tmp"); len(lines) != 0 {
				t.Fatalf("mounted behind the symlink: %q", lines)
			}
		})
	}
}

func TestContainerGone(t *testing.T) {
	env := dockertest.Require(t)
	t.Parallel()
	a := env.Run(t, dockertest.RunOpts{})
	b := env.Run(t, dockertest.RunOpts{})
	d := newDeliverer(t, tmpfs.Config{})
	ctx := context.Background()
	files := []secret.File{file("db", 1, 0o400, 0, 0, randValue(t, 16))}

	// a's id with b's pid: a reused pid is refused.
	if err := d.Apply(ctx, container.Info{ID: a.ID, PID: b.PID}, files); !errors.Is(err, tmpfs.ErrContainerGone) {
		t.Fatalf("pid of another container: err = %v", err)
	}
	// A host process is not the container.
	if err := d.Apply(ctx, container.Info{ID: a.ID, PID: os.Getpid()}, files); !errors.Is(err, tmpfs.ErrContainerGone) {
		t.Fatalf("host pid: err = %v", err)
	}
	if err := d.Apply(ctx, container.Info{ID: a.ID}, files); !errors.Is(err, tmpfs.ErrContainerGone) {
		t.Fatalf("pid 0: err = %v", err)
	}
	env.Remove(t, a.ID)
	if err := d.Apply(ctx, infoOf(a), files); !errors.Is(err, tmpfs.ErrContainerGone) {
		t.Fatalf("stopped container: err = %v", err)
	}
	if err := d.Release(ctx, infoOf(a)); err != nil {
		t.Fatalf("Release of a gone container: %v", err)
	}
	if err := d.Apply(ctx, infoOf(b), files); err != nil {
		t.Fatalf("b still served: %v", err)
	}
}

func TestReadOnlyRootFailsClosed(t *testing.T) {
	env := dockertest.Require(t)
	t.Parallel()
	c := env.Run(t, dockertest.RunOpts{Args: []string{"--read-only"}})
	d := newDeliverer(t, tmpfs.Config{})
	err := d.Apply(context.Background(), infoOf(c), []secret.File{file("db", 1, 0o400, 0, 0, randValue(t, 16))})
	if err == nil {
		t.Fatal("Apply into a read-only root without /run/secrets succeeded")
	}
	t.Logf("error as expected: %v", err)
	// With --tmpfs /run/secrets it works.
	c2 := env.Run(t, dockertest.RunOpts{Args: []string{"--read-only"}, Tmpfs: []string{"/run/secrets"}})
	if err := d.Apply(context.Background(), infoOf(c2), []secret.File{file("db", 1, 0o400, 0, 0, randValue(t, 16))}); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentAppliesOneContainer(t *testing.T) {
	env := dockertest.Require(t)
	t.Parallel()
	c := env.Run(t, dockertest.RunOpts{})
	d := newDeliverer(t, tmpfs.Config{Logger: slog.New(slog.DiscardHandler)})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := secret.Value(strings.Repeat(string(rune('a'+i)), 100))
			if err := d.Apply(context.Background(), infoOf(c), []secret.File{file("s", uint64(i+1), 0o400, 0, 0, v)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	out := exec(t, env, c.ID, "ls", "-A", "/run/secrets")
	if out != ".coffer\ns\n" {
		t.Fatalf("directory after concurrent applies: %q", out)
	}
	if got := exec(t, env, c.ID, "cat", "/run/secrets/s"); len(got) != 100 || strings.Count(got, got[:1]) != 100 {
		t.Fatalf("s = %q", got)
	}
}

var _ = deliver.ErrNoSwapProtection
