package execstate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// selfCgroup is a piece of this process's cgroup path, standing for a
// container id.
func selfCgroup(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Skip(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if id := filepath.Base(line[strings.LastIndexByte(line, ':')+1:]); id != "/" && id != "." && id != "" {
			return id
		}
	}
	t.Skip("this process is in the root cgroup")
	return ""
}

// The reader, against this test's own process (its root is the host's):
// a record is read; a missing one is ErrNoRecord; links, FIFOs, huge or
// foreign-owned files, a directory that is a symlink and a process that is
// not the container's are refused, quickly and without blocking.
func TestProcReader(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (pidfd and /proc/<pid>/root)")
	}
	id := selfCgroup(t)
	pid := os.Getpid()
	dir := t.TempDir()
	r := ProcReader{Dir: dir}
	ctx := context.Background()
	if _, err := r.Read(ctx, id, pid); !errors.Is(err, ErrNoRecord) {
		t.Fatalf("no record: %v", err)
	}
	rec := filepath.Join(dir, Name)
	good := `{"v":1,"pid":12,"files":[]}`
	os.WriteFile(rec, []byte(good), 0o600)
	if b, err := r.Read(ctx, id, pid); err != nil || string(b) != good {
		t.Fatalf("Read = %q, %v", b, err)
	}
	if _, err := r.Read(ctx, "not-this-container", pid); !errors.Is(err, ErrGone) {
		t.Fatalf("another container's process: %v", err)
	}
	if _, err := r.Read(ctx, id, 0); !errors.Is(err, ErrGone) {
		t.Fatalf("pid 0: %v", err)
	}

	host := filepath.Join(t.TempDir(), "host-file")
	os.WriteFile(host, []byte(good), 0o600)
	for name, plant := range map[string]func() error{
		"symlink": func() error { return os.Symlink(host, rec) },
		"fifo":    func() error { return syscall.Mkfifo(rec, 0o600) },
		"dir":     func() error { return os.Mkdir(rec, 0o700) },
		"huge":    func() error { return os.WriteFile(rec, make([]byte, MaxSize+1), 0o600) },
		"not root's": func() error {
			if err := os.WriteFile(rec, []byte(good), 0o600); err != nil {
				return err
			}
			return os.Chown(rec, 1000, 1000)
		},
	} {
		os.RemoveAll(rec)
		if err := plant(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { _, err := r.Read(ctx, id, pid); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: %v, want ErrInvalid", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: Read blocked", name)
		}
	}

	// The secrets directory itself a symlink to a directory holding a
	// record: not followed.
	os.RemoveAll(rec)
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, Name), []byte(good), 0o600)
	link := filepath.Join(t.TempDir(), "secrets")
	os.Symlink(other, link)
	if _, err := (ProcReader{Dir: link}).Read(ctx, id, pid); !errors.Is(err, ErrInvalid) {
		t.Fatalf("symlinked directory: %v", err)
	}
}
