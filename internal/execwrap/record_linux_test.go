package execwrap

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"coffer/internal/execstate"
)

// shmDir is a directory on a tmpfs (/dev/shm), as the agent's.
func shmDir(t *testing.T) string {
	t.Helper()
	var fs unix.Statfs_t
	if unix.Statfs("/dev/shm", &fs) != nil || fs.Type != unix.TMPFS_MAGIC {
		t.Skip("no tmpfs at /dev/shm")
	}
	dir, err := os.MkdirTemp("/dev/shm", "coffer-execwrap-")
	if err != nil {
		t.Skip("cannot write /dev/shm:", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// waitRecord waits for a record of pid and returns it.
func waitRecord(t *testing.T, dir string, pid int) execstate.State {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(dir, execstate.Name))
		if err == nil {
			st, err := execstate.Parse(b)
			if err != nil {
				t.Fatalf("coffer exec wrote a record it cannot parse: %v", err)
			}
			if st.PID == pid {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no record of pid %d in %s (last: %s)", pid, dir, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func digests(st execstate.State) string {
	var out []string
	for _, f := range st.Files {
		out = append(out, f.File+"="+f.SHA256)
	}
	return strings.Join(out, " ")
}

// Under --restart-on-change the record names the running child and the
// digests of what it was started with, and follows each restart; it holds
// no value and is root-only.
func TestRecordFollowsTheSupervisedChild(t *testing.T) {
	dir := shmDir(t)
	put(t, dir, "db", "rec-value-v1")
	put(t, dir, "app.env", "A=rec-a1\n")
	w := startWrapper(t, Spec{Dir: dir, Env: []EnvVar{{"DB", "db"}}, EnvFiles: []string{"app.env"}, RestartOnChange: true,
		Poll: 20 * time.Millisecond, Grace: 5 * time.Second}, "wait")
	pid1 := pidOf(t, w.waitLine(t, 1, "start"))
	st := waitRecord(t, dir, pid1)
	want := "db=" + execstate.Digest([]byte("rec-value-v1")) + " app.env=" + execstate.Digest([]byte("A=rec-a1\n"))
	if !st.Restarts || digests(st) != want {
		t.Fatalf("record %+v, want restarts and %s", st, want)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, execstate.Name))
	if strings.Contains(string(raw), "rec-value") || strings.Contains(string(raw), "rec-a1") {
		t.Fatal("a value in the record")
	}
	if fi, _ := os.Stat(filepath.Join(dir, execstate.Name)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("record mode %v, want 0600", fi.Mode())
	}

	// Bad new files: the child is left alone, and so is its record.
	put(t, dir, "db", "bad\x00value")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(w.stderr.String(), "cannot be read; the child keeps running") {
		if time.Now().After(deadline) {
			t.Fatalf("no word of the bad file:\n%s", w.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := waitRecord(t, dir, pid1); digests(st) != want {
		t.Fatalf("the record changed with bad files: %+v", st)
	}

	put(t, dir, "db", "rec-value-v2")
	pid2 := pidOf(t, w.waitLine(t, 2, "start"))
	st = waitRecord(t, dir, pid2)
	if want := "db=" + execstate.Digest([]byte("rec-value-v2")) + " app.env=" + execstate.Digest([]byte("A=rec-a1\n")); digests(st) != want {
		t.Fatalf("record after the restart %+v, want %s", st, want)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, execstate.Name+".tmp-*")); len(m) != 0 {
		t.Fatalf("temporary files left: %v", m)
	}
}

// Without --restart-on-change the record names coffer exec's own pid (it
// became the command), which never restarts.
func TestRecordOfAnExecedCommand(t *testing.T) {
	dir := shmDir(t)
	put(t, dir, "db", "rec-exec-value")
	w := startWrapper(t, Spec{Dir: dir, Env: []EnvVar{{"DB", "db"}}}, "wait")
	w.waitLine(t, 1, "start")
	st := waitRecord(t, dir, w.cmd.Process.Pid)
	if st.Restarts || digests(st) != "db="+execstate.Digest([]byte("rec-exec-value")) {
		t.Fatalf("record %+v", st)
	}
}

// Never on a disk: in a directory that is not a tmpfs no record is
// written, the reason is logged once, and the command runs.
func TestNoRecordOutsideATmpfs(t *testing.T) {
	dir := t.TempDir()
	var fs unix.Statfs_t
	if unix.Statfs(dir, &fs) == nil && fs.Type == unix.TMPFS_MAGIC {
		t.Skip("the test's temporary directory is a tmpfs")
	}
	put(t, dir, "db", "v1")
	w := startWrapper(t, Spec{Dir: dir, Env: []EnvVar{{"DB", "db"}}, RestartOnChange: true, Poll: 20 * time.Millisecond}, "wait")
	w.waitLine(t, 1, "start")
	put(t, dir, "db", "v2")
	w.waitLine(t, 2, "start")
	if _, err := os.Stat(filepath.Join(dir, execstate.Name)); err == nil {
		t.Fatal("a record on a disk")
	}
	if n := strings.Count(w.stderr.String(), "cannot record what the process was started with"); n != 1 {
		t.Fatalf("the reason logged %d times:\n%s", n, w.stderr.String())
	}
}
