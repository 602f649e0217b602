package tmpfs_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"coffer/internal/deliver/tmpfs"
	"coffer/internal/dockertest"
	"coffer/internal/secret"
)

// engineRoot returns the root of the mount namespace the engine made
// container c from, as /proc/<c's parent, the runtime's shim>/root: the test
// may run in a mount namespace of its own (where /var/lib/docker/volumes/...
// is the bare directory under the mount), and pid 1 may not be readable.
func engineRoot(t *testing.T, c dockertest.ContainerRef) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(c.PID) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return "/proc/" + f[1] + "/root"
}

// requireTmpfs fails unless dir is a tmpfs: otherwise the checks on it
// would prove nothing.
func requireTmpfs(t *testing.T, dir string) {
	t.Helper()
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil || sfs.Type != unix.TMPFS_MAGIC {
		t.Fatalf("%s is not a tmpfs (statfs type %#x, %v)", dir, sfs.Type, err)
	}
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range des {
		names = append(names, e.Name())
	}
	return names
}

// tmpfsVolume creates a named tmpfs volume, removed when the test ends
// (after the containers that use it, which start later), and returns its
// name and its directory on the host.
func tmpfsVolume(t *testing.T, env *dockertest.Env) (name, hostDir string) {
	t.Helper()
	name = "coffer-test-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")) + "-" + string(randValue(t, 8))
	if _, err := env.Docker(t, "volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs", name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := env.Docker(t, "volume", "rm", "-f", name); err != nil {
			t.Logf("remove volume %s: %v", name, err)
		}
	})
	dir, err := env.Docker(t, "volume", "inspect", "--format", "{{.Mountpoint}}", name)
	if err != nil {
		t.Fatal(err)
	}
	return name, dir
}

// A tmpfs the host or another container also sees is refused: nothing is
// written where they could read it.
func TestRefusesSharedTmpfs(t *testing.T) {
	env := dockertest.Require(t)
	t.Parallel()
	d := newDeliverer(t, tmpfs.Config{})
	ctx := context.Background()

	t.Run("named tmpfs volume shared by two containers", func(t *testing.T) {
		vol, volDir := tmpfsVolume(t, env)
		a := env.Run(t, dockertest.RunOpts{Args: []string{"-v", vol + ":/run/secrets"}})
		b := env.Run(t, dockertest.RunOpts{Args: []string{"-v", vol + ":/run/secrets"}})
		hostDir := engineRoot(t, a) + volDir
		requireTmpfs(t, hostDir)
		v := randValue(t, 32)
		err := d.Apply(ctx, infoOf(a), []secret.File{file("db", 1, 0o400, 0, 0, v)})
		if !errors.Is(err, tmpfs.ErrSharedTmpfs) {
			t.Fatalf("Apply = %v, want ErrSharedTmpfs", err)
		}
		msg := err.Error()
		if !strings.Contains(msg, "/run/secrets is a shared volume") || !strings.Contains(msg, volDir) ||
			!strings.Contains(msg, "Coffer will not write secrets where other containers or the host can read them") {
			t.Fatalf("error = %q", msg)
		}
		if strings.Contains(msg, string(v)) {
			t.Fatal("value in the error")
		}
		for _, c := range []dockertest.ContainerRef{a, b} {
			if out := exec(t, env, c.ID, "ls", "-A", "/run/secrets"); out != "" {
				t.Fatalf("%s sees %q in the volume", c.Name, out)
			}
		}
		if names := entries(t, hostDir); len(names) != 0 {
			t.Fatalf("host's volume directory holds %v", names)
		}
	})

	t.Run("named tmpfs volume used by one container", func(t *testing.T) {
		// The host sees it under /var/lib/docker/volumes, and so would
		// any container started later with the volume.
		vol, volDir := tmpfsVolume(t, env)
		a := env.Run(t, dockertest.RunOpts{Args: []string{"-v", vol + ":/run/secrets"}})
		hostDir := engineRoot(t, a) + volDir
		requireTmpfs(t, hostDir)
		if err := d.Apply(ctx, infoOf(a), []secret.File{file("db", 1, 0o400, 0, 0, randValue(t, 32))}); !errors.Is(err, tmpfs.ErrSharedTmpfs) {
			t.Fatalf("Apply = %v, want ErrSharedTmpfs", err)
		}
		if names := entries(t, hostDir); len(names) != 0 {
			t.Fatalf("host's volume directory holds %v", names)
		}
	})

	t.Run("bind mount of a host tmpfs directory", func(t *testing.T) {
		// docker run -v creates the missing host directory.
		name := "coffer-test-" + string(randValue(t, 12))
		a := env.Run(t, dockertest.RunOpts{Args: []string{"-v", "/dev/shm/" + name + ":/run/secrets"}})
		t.Cleanup(func() {
			if _, err := env.Docker(t, "run", "--rm", "--network", "none", "-v", "/dev/shm:/host-shm", env.Image(t), "rm", "-rf", "/host-shm/"+name); err != nil {
				t.Logf("remove /dev/shm/%s: %v", name, err)
			}
		})
		hostDir := engineRoot(t, a) + "/dev/shm/" + name
		requireTmpfs(t, hostDir)
		err := d.Apply(ctx, infoOf(a), []secret.File{file("db", 1, 0o400, 0, 0, randValue(t, 32))})
		if !errors.Is(err, tmpfs.ErrSharedTmpfs) || !strings.Contains(err.Error(), "at /dev/shm") {
			t.Fatalf("Apply = %v, want ErrSharedTmpfs naming /dev/shm", err)
		}
		if names := entries(t, hostDir); len(names) != 0 {
			t.Fatalf("host directory holds %v", names)
		}
	})

	t.Run("files an earlier agent put there are taken away", func(t *testing.T) {
		vol, volDir := tmpfsVolume(t, env)
		a := env.Run(t, dockertest.RunOpts{Args: []string{"-v", vol + ":/run/secrets"}})
		b := env.Run(t, dockertest.RunOpts{Args: []string{"-v", vol + ":/run/secrets"}})
		// What an agent without the check left: a value and its manifest;
		// and a file Coffer did not create.
		exec(t, env, b.ID, "sh", "-c", `echo old-value > /run/secrets/db && echo mine > /run/secrets/own && `+
			`echo '{"v":1,"files":[{"name":"db","secret":"app/db","version":1,"mode":256,"uid":0,"gid":0}]}' > /run/secrets/.coffer`)
		err := d.Apply(ctx, infoOf(a), []secret.File{file("db", 2, 0o400, 0, 0, randValue(t, 32))})
		if !errors.Is(err, tmpfs.ErrSharedTmpfs) || !strings.Contains(err.Error(), "(1 file(s) Coffer had put there were removed)") {
			t.Fatalf("Apply = %v, want ErrSharedTmpfs that removed 1 file", err)
		}
		if out := exec(t, env, b.ID, "ls", "-A", "/run/secrets"); out != ".coffer\nown\n" {
			t.Fatalf("volume holds %q, want the empty manifest and the foreign file", out)
		}
		if got := strings.Join(entries(t, engineRoot(t, a)+volDir), " "); got != ".coffer own" {
			t.Fatalf("host's volume directory holds %q", got)
		}
	})
}
