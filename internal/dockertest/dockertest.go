// Package dockertest is Coffer's kit for tests against a real Docker engine:
// it finds the engine (or skips), builds a tiny local busybox image without
// pulling anything, runs throw-away containers with no network, and can start
// a private dockerd that a test may stop and restart.
//
// Tests that use it skip when the process is not root or no engine answers,
// and fail instead when the environment sets COFFER_REQUIRE_DOCKER=1 (as CI
// does). The kit drives the docker CLI, which must be on PATH. Containers
// carry the pid of the test process that made them; Require removes those
// left behind by a process that was killed before its cleanups ran.
package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireEnv is the environment variable that turns skips into failures.
const RequireEnv = "COFFER_REQUIRE_DOCKER"

// ImageRef is the local image Image builds.
const ImageRef = "coffer-test/busybox:1"

// busyboxPath is where Debian's busybox-static installs the binary.
const busyboxPath = "/bin/busybox"

// applets are the busybox commands the test image links to.
var applets = []string{
	"cat", "chmod", "echo", "env", "false", "grep", "head", "id", "kill", "ln", "ls",
	"mkdir", "mount", "printf", "ps", "readlink", "rm", "sh", "sleep", "stat", "sync",
	"tail", "test", "touch", "true", "umount", "wc",
}

// Env is one Docker engine reachable by the docker CLI.
type Env struct {
	// Host is the engine's address as given to `docker -H`; empty for the
	// CLI's default (DOCKER_HOST or /var/run/docker.sock).
	Host string
}

// RunOpts describes a container to run. Every container runs with
// --network none and is removed when the test ends.
type RunOpts struct {
	Name   string            // container name; a random "coffer-test-..." if empty
	Labels map[string]string // --label k=v
	Image  string            // image ref; Env.Image if empty
	Cmd    []string          // command; "sleep 3600" if empty
	Tmpfs  []string          // --tmpfs values, e.g. "/run/secrets" or "/run/secrets:size=1m"
	Args   []string          // further `docker run` flags, before the image
}

// ContainerRef is a running test container.
type ContainerRef struct {
	ID   string // full id
	Name string
	PID  int // host pid of its init process
}

var (
	defaultOnce sync.Once
	defaultErr  error
	images      sync.Map // host → *imageOnce
)

type imageOnce struct {
	once sync.Once
	err  error
}

// Skip skips t with reason, or fails it when COFFER_REQUIRE_DOCKER=1.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s (required by %s=1)", msg, RequireEnv)
	}
	t.Skip(msg)
}

// Require returns the default engine, or skips t unless the process is root
// and the engine answers (failing instead under COFFER_REQUIRE_DOCKER=1).
func Require(t testing.TB) *Env {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "dockertest: needs root")
	}
	defaultOnce.Do(func() {
		if _, err := exec.LookPath("docker"); err != nil {
			defaultErr = fmt.Errorf("docker CLI not found: %w", err)
			return
		}
		defaultErr = (&Env{}).ping(10 * time.Second)
		if defaultErr == nil {
			(&Env{}).reap()
		}
	})
	if defaultErr != nil {
		Skip(t, "dockertest: no Docker engine: %v", defaultErr)
	}
	return &Env{}
}

func (e *Env) ping(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := e.docker(ctx, nil, "version", "--format", "{{.Server.APIVersion}}")
	return err
}

// Docker runs the docker CLI against this engine with args and returns its
// trimmed stdout; the error includes stderr.
func (e *Env) Docker(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return e.docker(ctx, nil, args...)
}

func (e *Env) docker(ctx context.Context, stdin []byte, args ...string) (string, error) {
	if e.Host != "" {
		args = append([]string{"-H", e.Host}, args...)
	}
	cmd := exec.CommandContext(ctx, "docker", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(stdout.String()), fmt.Errorf("docker %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Image returns ImageRef, importing it into the engine once per process if it
// is missing: a tarball of the host's static busybox and its applet links.
func (e *Env) Image(t testing.TB) string {
	t.Helper()
	v, _ := images.LoadOrStore(e.Host, &imageOnce{})
	o := v.(*imageOnce)
	o.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := e.docker(ctx, nil, "image", "inspect", ImageRef); err == nil {
			return
		}
		tarball, err := busyboxTar()
		if err != nil {
			o.err = err
			return
		}
		_, o.err = e.docker(ctx, tarball, "import", "-", ImageRef)
	})
	if o.err != nil {
		if errors.Is(o.err, os.ErrNotExist) {
			Skip(t, "dockertest: %v (install busybox-static)", o.err)
		}
		t.Fatalf("dockertest: build %s: %v", ImageRef, o.err)
	}
	return ImageRef
}

// BuildImage builds image ref FROM the local busybox image (Image) with
// the given LABELs, using the engine's classic builder (nothing is pulled),
// and removes it when the test ends (after the test's containers, which
// were started later). It returns the image id.
func (e *Env) BuildImage(t testing.TB, ref string, labels map[string]string) string {
	t.Helper()
	base := e.Image(t)
	var df strings.Builder
	fmt.Fprintf(&df, "FROM %s\n", base)
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		fmt.Fprintf(&df, "LABEL %s=%s\n", strconv.Quote(k), strconv.Quote(labels[k]))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{"build", "-q", "-t", ref, "-"}
	if e.Host != "" {
		args = append([]string{"-H", e.Host}, args...)
	}
	cmd := exec.CommandContext(ctx, "docker", args...)
	// The classic builder: BuildKit may be absent, and it never needs to
	// pull for a local FROM.
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	cmd.Stdin = strings.NewReader(df.String())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Cleanup(func() {
		if _, err := e.Docker(t, "rmi", ref); err != nil && !strings.Contains(err.Error(), "No such image") {
			t.Logf("dockertest: remove image %s: %v", ref, err)
		}
	})
	if err != nil {
		t.Fatalf("dockertest: build %s: %v: %s", ref, err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String())
}

func busyboxTar() ([]byte, error) {
	bin, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, fmt.Errorf("read busybox: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Unix(0, 0)
	dirs := []string{"bin/", "etc/", "tmp/", "run/", "proc/", "sys/", "dev/"}
	for _, d := range dirs {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode, ModTime: now}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), ModTime: now}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	for _, a := range applets {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", ModTime: now}); err != nil {
			return nil, err
		}
	}
	passwd := []byte("root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644, Size: int64(len(passwd)), ModTime: now}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(passwd); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Run starts a container with --network none and removes it (docker rm -f)
// when the test ends. It fails t if the container does not start.
func (e *Env) Run(t testing.TB, o RunOpts) ContainerRef {
	t.Helper()
	if o.Name == "" {
		o.Name = "coffer-test-" + randHex(6)
	}
	if o.Image == "" {
		o.Image = e.Image(t)
	}
	if len(o.Cmd) == 0 {
		o.Cmd = []string{"sleep", "3600"}
	}
	args := []string{"run", "-d", "--network", "none", "--name", o.Name, "--label", ownerLabel + "=" + strconv.Itoa(os.Getpid())}
	for _, k := range slices.Sorted(maps.Keys(o.Labels)) {
		args = append(args, "--label", k+"="+o.Labels[k])
	}
	for _, tm := range o.Tmpfs {
		args = append(args, "--tmpfs", tm)
	}
	args = append(args, o.Args...)
	args = append(args, o.Image)
	args = append(args, o.Cmd...)
	id, err := e.Docker(t, args...)
	if id != "" {
		t.Cleanup(func() { e.Remove(t, id) })
	}
	if err != nil {
		t.Fatalf("dockertest: run %s: %v", o.Name, err)
	}
	pid, err := e.PID(t, id)
	if err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	return ContainerRef{ID: id, Name: o.Name, PID: pid}
}

// ownerLabel marks test containers with the pid of the test process that
// made them, so a later run can remove those of a process that was killed
// before its cleanups ran.
const ownerLabel = "coffer.test.owner-pid"

// reap removes test containers whose owning process is gone.
func (e *Env) reap() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := e.docker(ctx, nil, "ps", "-a", "--filter", "label="+ownerLabel,
		"--format", `{{.ID}} {{.Label "`+ownerLabel+`"}}`)
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		id, owner, ok := strings.Cut(line, " ")
		pid, err := strconv.Atoi(owner)
		if !ok || err != nil || pid <= 0 || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		_, _ = e.docker(ctx, nil, "rm", "-f", "-v", id)
	}
}

// PID returns the host pid of container id's init process (0 if not running).
func (e *Env) PID(t testing.TB, id string) (int, error) {
	t.Helper()
	out, err := e.Docker(t, "inspect", "--format", "{{.State.Pid}}", id)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(out)
	if err != nil {
		return 0, fmt.Errorf("inspect %s: pid %q: %w", id, out, err)
	}
	return pid, nil
}

// Remove force-removes container id, logging (not failing) on error.
func (e *Env) Remove(t testing.TB, id string) {
	t.Helper()
	if _, err := e.Docker(t, "rm", "-f", "-v", id); err != nil && !strings.Contains(err.Error(), "No such container") {
		t.Logf("dockertest: remove %s: %v", id, err)
	}
}

// Exec runs cmd in container id and returns its stdout (not trimmed); the
// error carries stderr.
func (e *Env) Exec(t testing.TB, id string, cmd ...string) (string, error) {
	t.Helper()
	args := []string{"exec", id}
	if e.Host != "" {
		args = append([]string{"-H", e.Host}, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "docker", append(args, cmd...)...)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker exec %s %v: %w: %s", id, cmd, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
