package execwrap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// wrapper is a running `coffer exec` (the test binary as the wrapper).
type wrapper struct {
	cmd    *exec.Cmd
	stderr *syncBuf
	out    string // the child's record
	done   chan struct{}
	code   int
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// startWrapper runs the wrapper with s; its child is the test binary in
// mode, recording into a file in dir.
func startWrapper(t *testing.T, s Spec, mode string) *wrapper {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	w := &wrapper{stderr: &syncBuf{}, out: filepath.Join(t.TempDir(), "child.log"), done: make(chan struct{})}
	s.Argv = []string{self, "execwrap-child", mode, w.out}
	raw, _ := json.Marshal(s)
	w.cmd = exec.Command(self)
	w.cmd.Env = append(os.Environ(), "EXECWRAP_SPEC="+string(raw))
	w.cmd.Stderr = w.stderr
	w.cmd.WaitDelay = 5 * time.Second
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := w.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			w.code = ee.ExitCode()
			if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
				w.code = 128 + int(st.Signal())
			}
		}
		close(w.done)
	}()
	t.Cleanup(func() {
		w.cmd.Process.Kill()
		// The children of a killed supervisor: end them too (they hold
		// its stderr).
		for _, l := range w.lines() {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "start" {
				if pid, _ := strconv.Atoi(f[1]); pid > 0 && pid != w.cmd.Process.Pid {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		<-w.done
	})
	return w
}

func (w *wrapper) lines() []string {
	b, _ := os.ReadFile(w.out)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// waitLine waits until the child's record has a line with prefix, and
// returns the last such line.
func (w *wrapper) waitLine(t *testing.T, n int, prefix string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var got []string
		for _, l := range w.lines() {
			if strings.HasPrefix(l, prefix) {
				got = append(got, l)
			}
		}
		if len(got) >= n {
			return got[n-1]
		}
		select {
		case <-w.done:
			t.Fatalf("wrapper exited (%d) before %d lines %q; child: %q; stderr:\n%s", w.code, n, prefix, w.lines(), w.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %d lines %q; child: %q; stderr:\n%s", n, prefix, w.lines(), w.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (w *wrapper) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-w.done:
		return w.code
	case <-time.After(30 * time.Second):
		t.Fatalf("wrapper did not exit; stderr:\n%s", w.stderr.String())
		return 0
	}
}

// put writes a file the way the agent does: a new inode renamed over the
// name.
func put(t *testing.T, dir, name, value string) {
	t.Helper()
	tmp := filepath.Join(dir, ".tmp-"+name)
	if err := os.WriteFile(tmp, []byte(value), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func pidOf(t *testing.T, line string) int {
	t.Helper()
	pid, err := strconv.Atoi(strings.Fields(line)[1])
	if err != nil {
		t.Fatalf("line %q: %v", line, err)
	}
	return pid
}

// noValue fails if a value appears in the process's argv or in what the
// wrapper printed.
func noValue(t *testing.T, pid int, stderr string, values ...string) {
	t.Helper()
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	for _, v := range values {
		if bytes.Contains(cmdline, []byte(v)) {
			t.Errorf("value in the argv of pid %d", pid)
		}
		if strings.Contains(stderr, v) {
			t.Errorf("value in the wrapper's output:\n%s", stderr)
		}
	}
}

// exec mode: the child is the wrapper's own process (same pid), with the
// values in its environment only.
func TestExecPutsValuesInTheEnvironmentOnly(t *testing.T) {
	dir := t.TempDir()
	put(t, dir, "db-password", "s3cret-db-value")
	put(t, dir, "app.env", "# app settings\nA=alpha-value\nexport B=\"two words\"\n")
	w := startWrapper(t, Spec{Dir: dir, Env: []EnvVar{{"DB", "db-password"}}, EnvFiles: []string{"app.env"}}, "wait")
	line := w.waitLine(t, 1, "start")
	if want := fmt.Sprintf("start %d DB=s3cret-db-value A=alpha-value B=two words", w.cmd.Process.Pid); line != want {
		t.Fatalf("child %q, want %q (exec: same pid)", line, want)
	}
	noValue(t, w.cmd.Process.Pid, w.stderr.String(), "s3cret-db-value", "alpha-value")
	w.cmd.Process.Signal(syscall.SIGTERM)
	if code := w.wait(t); code != 7 {
		t.Fatalf("exit %d, want the child's 7", code)
	}
}

// --wait: the child starts only once every file is there.
func TestWaitStartsOnlyWhenEveryFileIsThere(t *testing.T) {
	dir := t.TempDir()
	put(t, dir, "one", "value-one")
	w := startWrapper(t, Spec{Dir: dir, Env: []EnvVar{{"DB", "one"}, {"A", "two"}}, Wait: true, Timeout: 20 * time.Second, Poll: 20 * time.Millisecond}, "wait")
	time.Sleep(300 * time.Millisecond)
	if l := w.lines(); len(l) != 1 || l[0] != "" {
		t.Fatalf("the child started before its files: %q", l)
	}
	put(t, dir, "two", "value-two")
	if line := w.waitLine(t, 1, "start"); !strings.HasSuffix(line, "DB=value-one A=value-two B=") {
		t.Fatalf("child %q", line)
	}
}

// restart-process: a rotation restarts the child with the new values
// (SIGTERM first), the supervisor keeps its pid, forwards signals, and
// exits with the child's code.
func TestRestartOnChange(t *testing.T) {
	dir := t.TempDir()
	put(t, dir, "db", "value-v1")
	put(t, dir, "app.env", "A=a1\n")
	w := startWrapper(t, Spec{Dir: dir, Env: []EnvVar{{"DB", "db"}}, EnvFiles: []string{"app.env"}, RestartOnChange: true,
		Poll: 20 * time.Millisecond, Grace: 5 * time.Second}, "wait")
	first := w.waitLine(t, 1, "start")
	if !strings.HasSuffix(first, "DB=value-v1 A=a1 B=") {
		t.Fatalf("first child %q", first)
	}
	pid1 := pidOf(t, first)
	if pid1 == w.cmd.Process.Pid {
		t.Fatal("supervised child has the wrapper's pid")
	}
	w.cmd.Process.Signal(syscall.SIGHUP)
	if l := w.waitLine(t, 1, "hup"); pidOf(t, l) != pid1 {
		t.Fatalf("SIGHUP reached %q", l)
	}

	// Two files rotated together: one restart.
	put(t, dir, "db", "value-v2")
	put(t, dir, "app.env", "A=a2\n")
	second := w.waitLine(t, 2, "start")
	if !strings.HasSuffix(second, "DB=value-v2 A=a2 B=") {
		t.Fatalf("second child %q", second)
	}
	if l := w.waitLine(t, 1, "term"); pidOf(t, l) != pid1 {
		t.Fatalf("the old child was not stopped with SIGTERM first: %q", w.lines())
	}
	time.Sleep(200 * time.Millisecond)
	if n := strings.Count(strings.Join(w.lines(), "\n"), "start "); n != 2 {
		t.Fatalf("%d starts for one rotation of two files: %q", n, w.lines())
	}
	if err := syscall.Kill(pid1, 0); err == nil {
		t.Fatalf("old child %d still runs", pid1)
	}
	noValue(t, w.cmd.Process.Pid, w.stderr.String(), "value-v1", "value-v2")
	noValue(t, pidOf(t, second), "", "value-v1", "value-v2")
	// The supervisor's own environment holds no value; the child's holds
	// the new one only.
	if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", w.cmd.Process.Pid)); err != nil || bytes.Contains(env, []byte("value-v")) {
		t.Fatalf("a value in the supervisor's own environment (%v)", err)
	}
	if env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pidOf(t, second))); !bytes.Contains(env, []byte("DB=value-v2\x00")) || bytes.Contains(env, []byte("value-v1")) {
		t.Fatal("the new child's environment does not hold exactly the new value")
	}

	w.cmd.Process.Signal(syscall.SIGTERM)
	if code := w.wait(t); code != 7 {
		t.Fatalf("exit %d, want the child's 7; stderr:\n%s", code, w.stderr.String())
	}
}

// A child that ignores SIGTERM is killed after the grace period, and the
// new one starts.
func TestRestartKillsAChildThatIgnoresSIGTERM(t *testing.T) {
	dir := t.TempDir()
	put(t, dir, "db", "value-v1")
	w := startWrapper(t, Spec{Dir: dir, Env: []EnvVar{{"DB", "db"}}, RestartOnChange: true, Poll: 20 * time.Millisecond, Grace: 300 * time.Millisecond}, "ignore-term")
	pid1 := pidOf(t, w.waitLine(t, 1, "start"))
	put(t, dir, "db", "value-v2")
	w.waitLine(t, 1, "term-ignored")
	if l := w.waitLine(t, 2, "start"); !strings.HasSuffix(l, "DB=value-v2 A= B=") {
		t.Fatalf("second child %q", l)
	}
	if err := syscall.Kill(pid1, 0); err == nil {
		t.Fatal("the child that ignored SIGTERM still runs")
	}
	if !strings.Contains(w.stderr.String(), "killing it") {
		t.Fatalf("no word of the kill:\n%s", w.stderr.String())
	}
}

// Files that changed but cannot be used (a NUL byte; removed) leave the
// running child alone.
func TestRestartKeepsTheChildWhenNewFilesAreBad(t *testing.T) {
	dir := t.TempDir()
	put(t, dir, "db", "value-v1")
	w := startWrapper(t, Spec{Dir: dir, Env: []EnvVar{{"DB", "db"}}, RestartOnChange: true, Poll: 20 * time.Millisecond}, "wait")
	pid1 := pidOf(t, w.waitLine(t, 1, "start"))
	put(t, dir, "db", "bad\x00value")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(w.stderr.String(), "cannot be read; the child keeps running") {
		if time.Now().After(deadline) {
			t.Fatalf("no word of the bad file:\n%s", w.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	os.Remove(filepath.Join(dir, "db"))
	for !strings.Contains(w.stderr.String(), "removed (revoked?)") {
		if time.Now().After(deadline) {
			t.Fatalf("no word of the removed file:\n%s", w.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(w.lines()); n != 1 || syscall.Kill(pid1, 0) != nil {
		t.Fatalf("the child was touched: %q", w.lines())
	}
	if strings.Contains(w.stderr.String(), "bad") {
		t.Fatalf("the file's content in the output:\n%s", w.stderr.String())
	}
	put(t, dir, "db", "value-v3")
	if l := w.waitLine(t, 2, "start"); !strings.HasSuffix(l, "DB=value-v3 A= B=") {
		t.Fatalf("second child %q", l)
	}
}

// The supervisor ends with the child's own exit code.
func TestSupervisorExitsWithTheChildsCode(t *testing.T) {
	dir := t.TempDir()
	put(t, dir, "db", "v")
	w := startWrapper(t, Spec{Dir: dir, Env: []EnvVar{{"DB", "db"}}, RestartOnChange: true}, "exit3")
	if code := w.wait(t); code != 3 {
		t.Fatalf("exit %d, want 3; stderr:\n%s", code, w.stderr.String())
	}
}

// Bad input: a clear error naming the variable or file (never a value),
// the right sentinel and exit code, nothing started.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	put(t, dir, "ok", "fine-value")
	put(t, dir, "nul", "a\x00b-secret")
	put(t, dir, "long", strings.Repeat("x", maxEnvString))
	put(t, dir, "bad.env", "A=1\nthis line holds hunter2 and no equals sign\n")
	put(t, dir, "dup.env", "DB=x\n")
	os.Mkdir(filepath.Join(dir, "adir"), 0o755)
	never := filepath.Join(t.TempDir(), "ran")
	argv := []string{"/bin/sh", "-c", "touch " + never}
	for _, tc := range []struct {
		name string
		s    Spec
		err  error
		code int
		msg  string
	}{
		{"bad name", Spec{Env: []EnvVar{{"1DB", "ok"}}}, ErrUsage, 2, `"1DB" is not a valid variable name`},
		{"name with =", Spec{Env: []EnvVar{{"", "ok"}}}, ErrUsage, 2, "not a valid variable name"},
		{"twice", Spec{Env: []EnvVar{{"DB", "ok"}, {"DB", "ok"}}}, ErrUsage, 2, "--env DB given twice"},
		{"path", Spec{Env: []EnvVar{{"DB", "../etc/passwd"}}}, ErrUsage, 2, "a file directly under the secrets directory"},
		{"relative dir", Spec{Dir: "run/secrets", Env: []EnvVar{{"DB", "ok"}}}, ErrUsage, 2, "must be an absolute path"},
		{"nothing", Spec{}, ErrUsage, 2, "nothing to do"},
		{"missing", Spec{Env: []EnvVar{{"DB", "absent"}}}, ErrMissing, 1, "absent not there"},
		{"timeout", Spec{Env: []EnvVar{{"DB", "absent"}}, Wait: true, Timeout: 200 * time.Millisecond}, ErrTimeout, 1, "after 200ms, still missing: " + dir + "/absent"},
		{"directory", Spec{Env: []EnvVar{{"DB", "adir"}}}, ErrMissing, 1, "not a regular file"},
		{"nul", Spec{Env: []EnvVar{{"DB", "nul"}}}, ErrValue, 1, "DB (--env DB=nul) holds a NUL byte"},
		{"too long", Spec{Env: []EnvVar{{"DB", "long"}}}, ErrValue, 1, "the kernel takes at most"},
		{"bad env file", Spec{EnvFiles: []string{"bad.env"}}, ErrUsage, 1, "bad.env: line 2: not NAME=VALUE"},
		{"set twice", Spec{Env: []EnvVar{{"DB", "ok"}}, EnvFiles: []string{"dup.env"}}, ErrUsage, 1, "DB is set by --env DB=ok and by " + dir + "/dup.env line 1"},
		{"no command", Spec{Env: []EnvVar{{"DB", "ok"}}, Argv: []string{}}, ErrUsage, 2, "no command"},
		{"not found", Spec{Env: []EnvVar{{"DB", "ok"}}, Argv: []string{"coffer-no-such-command"}}, ErrCommand, 127, "not found"},
		{"not executable", Spec{Env: []EnvVar{{"DB", "ok"}}, Argv: []string{filepath.Join(dir, "ok")}}, ErrCommand, 126, "permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			if s.Dir == "" {
				s.Dir = dir
			}
			if s.Argv == nil {
				s.Argv = argv
			}
			code, err := Run(context.Background(), &s)
			if !errors.Is(err, tc.err) || code != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Run = %d, %v; want %d, %v with %q", code, err, tc.code, tc.err, tc.msg)
			}
			for _, v := range []string{"fine-value", "b-secret", "hunter2", "xxxxxxxx"} {
				if strings.Contains(err.Error(), v) {
					t.Fatalf("error %q holds a value", err)
				}
			}
			if _, err := os.Stat(never); err == nil {
				t.Fatal("the command ran")
			}
		})
	}
}

func TestParseDotenv(t *testing.T) {
	es, err := ParseDotenv([]byte("# c\n\n  A=1\r\nexport B = 'x y'\nC=\"q\"\nD=\nE=a=b # not a comment\nF=\"unbalanced\n"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, fmt.Sprintf("%s=%s@%d", e.Name, e.Value, e.Line))
	}
	want := "A=1@3 B= 'x y'@4 C=q@5 D=@6 E=a=b # not a comment@7 F=\"unbalanced@8"
	if strings.Join(got, " ") != want {
		t.Fatalf("got  %q\nwant %q", strings.Join(got, " "), want)
	}
	for _, bad := range []string{"A", "1A=x", "A=1\nA=2", "A-B=1", "=x"} {
		if _, err := ParseDotenv([]byte(bad)); err == nil {
			t.Errorf("ParseDotenv(%q) accepted", bad)
		}
	}
}

// FuzzParseDotenv checks that parsing never panics, that errors never
// quote the input, and that entries have valid, unique names.
func FuzzParseDotenv(f *testing.F) {
	for _, s := range []string{"A=1\n", "export B='x'\n# c\n", "A", "=", "A=1\nA=2", "A=\"\"", "\r\n\r\n", "export  C =\"x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := ParseDotenv(data)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, "line ") {
				t.Fatalf("error %q", msg)
			}
			return
		}
		seen := map[string]bool{}
		for _, e := range es {
			if !ValidName(e.Name) || seen[e.Name] {
				t.Fatalf("entry %q", e.Name)
			}
			seen[e.Name] = true
			if bytes.IndexByte(e.Value, '\n') >= 0 {
				t.Fatalf("value of %s spans lines", e.Name)
			}
		}
	})
}

// As pid 1 of its pid namespace (a container's main process) the
// supervisor reaps orphans re-parented to it: no zombie is left.
func TestSupervisorAsPID1ReapsOrphans(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a pid namespace")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare")
	}
	dir := t.TempDir()
	put(t, dir, "db", "v")
	self, _ := os.Executable()
	out := filepath.Join(t.TempDir(), "child.log")
	raw, _ := json.Marshal(Spec{Dir: dir, Env: []EnvVar{{"DB", "db"}}, RestartOnChange: true, Argv: []string{self, "execwrap-child", "orphan", out}})
	cmd := exec.Command(unshare, "--pid", "--fork", "--kill-child", self)
	cmd.Env = append(os.Environ(), "EXECWRAP_SPEC="+string(raw))
	var stderr syncBuf
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var children func(pid int) []int
	t.Cleanup(func() {
		// SIGKILL to pid 1 of the namespace ends every process in it, and
		// then unshare.
		for _, w := range children(cmd.Process.Pid) {
			syscall.Kill(w, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	children = func(pid int) []int {
		var out []int
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
		for _, f := range tasks {
			b, _ := os.ReadFile(f)
			for _, s := range strings.Fields(string(b)) {
				if n, err := strconv.Atoi(s); err == nil {
					out = append(out, n)
				}
			}
		}
		return out
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(out)
		if strings.Contains(string(b), "orphaned") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child did not orphan its grandchild: %q; stderr:\n%s", b, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second) // the orphan (sleep 0.2) has ended
	wrappers := children(cmd.Process.Pid)
	if len(wrappers) != 1 {
		t.Fatalf("unshare's children: %v", wrappers)
	}
	for _, c := range children(wrappers[0]) {
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c))
		if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) > 0 && f[0] == "Z" {
			t.Fatalf("zombie %d left under the supervisor (pid 1 of its namespace)", c)
		}
	}
	if n := len(children(wrappers[0])); n != 1 {
		t.Fatalf("the supervisor has %d children, want its child only", n)
	}
}
