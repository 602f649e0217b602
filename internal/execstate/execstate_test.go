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

var d1 = Digest([]byte("v1"))

func TestParse(t *testing.T) {
	good := `{"v":1,"pid":12,"restarts":true,"files":[{"file":"db","sha256":"` + d1 + `"}]}`
	st, err := Parse([]byte(good))
	if err != nil || st.PID != 12 || !st.Restarts || len(st.Files) != 1 || st.Files[0].SHA256 != d1 {
		t.Fatalf("Parse = %+v, %v", st, err)
	}
	if b, err := Marshal(st); err != nil || string(b) != good {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	many := `{"v":1,"pid":1,"files":[` + strings.Repeat(`{"file":"a","sha256":"`+d1+`"},`, MaxFiles) + `{"file":"b","sha256":"` + d1 + `"}]}`
	for name, bad := range map[string]string{
		"garbage":       "\x00\xff not json hunter2",
		"empty":         "",
		"version":       `{"v":2,"pid":1,"files":[]}`,
		"no pid":        `{"v":1,"files":[]}`,
		"unknown field": `{"v":1,"pid":1,"files":[],"value":"hunter2"}`,
		"path":          `{"v":1,"pid":1,"files":[{"file":"../etc/passwd","sha256":"` + d1 + `"}]}`,
		"dot file":      `{"v":1,"pid":1,"files":[{"file":".coffer","sha256":"` + d1 + `"}]}`,
		"twice":         `{"v":1,"pid":1,"files":[{"file":"a","sha256":"` + d1 + `"},{"file":"a","sha256":"` + d1 + `"}]}`,
		"short digest":  `{"v":1,"pid":1,"files":[{"file":"a","sha256":"abcd"}]}`,
		"not hex":       `{"v":1,"pid":1,"files":[{"file":"a","sha256":"` + strings.Repeat("z", 64) + `"}]}`,
		"trailing":      `{"v":1,"pid":1,"files":[]} {}`,
		"too many":      many,
		"too large":     strings.Repeat(" ", MaxSize+1),
		"wrong type":    `{"v":1,"pid":"1","files":[]}`,
	} {
		if _, err := Parse([]byte(bad)); !errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: Parse = %v", name, err)
		}
	}
}

// FuzzParse: never a panic, errors never quote the input, and what parses
// encodes back to a record that parses the same.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"v":1,"pid":12,"restarts":true,"files":[{"file":"db","sha256":"` + d1 + `"}]}`))
	f.Add([]byte(`{"v":1,"pid":1,"files":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), ErrInvalid.Error()+": ") {
				t.Fatalf("error %q", err)
			}
			return
		}
		b, err := Marshal(st)
		if err != nil {
			t.Fatalf("a parsed record does not encode: %v", err)
		}
		if again, err := Parse(b); err != nil || len(again.Files) != len(st.Files) || again.PID != st.PID {
			t.Fatalf("round trip: %+v, %v", again, err)
		}
	})
}

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
