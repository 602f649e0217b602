package cli_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"coffer/test/testkit"
)

// coffer exec, the built binary: the child's code passes through, the
// wrapper's own failures have their codes and clear messages, and no value
// is printed.
func TestCLIExec(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "db-password"), []byte("cli-exec-value"), 0o400); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		out  string // in stdout
		err  string // in stderr
	}{
		{[]string{"--env", "DB=db-password", "--", "sh", "-c", `test "$DB" = cli-exec-value && echo same`}, 0, "same", ""},
		{[]string{"--env", "DB=db-password", "--", "sh", "-c", "exit 9"}, 9, "", ""},
		{[]string{"--env", "DB=db-password", "--restart-on-change", "--", "sh", "-c", "exit 4"}, 4, "", ""},
		{[]string{"--env", "1DB=db-password", "--", "true"}, 2, "", `"1DB" is not a valid variable name`},
		{[]string{"--env", "DB", "--", "true"}, 2, "", "want NAME=FILE"},
		{[]string{"--env", "DB=db-password"}, 2, "", "no command"},
		{[]string{"--env", "DB=absent", "--", "true"}, 1, "", "absent not there"},
		{[]string{"--env", "DB=absent", "--wait", "--timeout", "300ms", "--", "true"}, 1, "", "after 300ms, still missing"},
		{[]string{"--env", "DB=db-password", "--", "coffer-no-such-command"}, 127, "", "not found"},
	} {
		cmd := exec.Command(testkit.Bin(t, "coffer"), append([]string{"exec", "--dir", dir}, tc.args...)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errb.String(), tc.err) {
			t.Errorf("coffer exec %q: exit %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, code, out.String(), errb.String(), tc.code, tc.out, tc.err)
		}
		if strings.Contains(out.String()+errb.String(), "cli-exec-value") {
			t.Errorf("coffer exec %q printed the value", tc.args)
		}
	}
}
