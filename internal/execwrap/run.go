package execwrap

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// Exit codes of the wrapper itself when it cannot start the command, as
// env(1) and docker run use them.
const (
	ExitCannotRun = 126 // found but not executable
	ExitNotFound  = 127 // no such command
)

// Run waits for the files (bounded, if s.Wait), puts their values in the
// child's environment and runs s.Argv: with syscall.Exec (Run returns only
// on failure) or, with s.RestartOnChange, as a supervised child whose exit
// code Run returns. The error, if any, wraps one of the package's
// sentinels; code is then the exit code the wrapper should end with.
func Run(ctx context.Context, s *Spec) (code int, err error) {
	if err := s.normalize(); err != nil {
		return 2, err
	}
	path, code, err := lookPath(s.Argv[0])
	if err != nil {
		return code, err
	}
	if err := waitFiles(ctx, s); err != nil {
		return 1, err
	}
	if s.RestartOnChange {
		return supervise(ctx, s, path)
	}
	e, err := load(s)
	if err != nil {
		return 1, err
	}
	s.Logger.Info("exec", "command", s.Argv[0], "variables", strings.Join(e.names, ","))
	s.record(os.Getpid(), false, e)
	err = syscall.Exec(path, s.Argv, childEnv(os.Environ(), e))
	e.Zero()
	return ExitCannotRun, fmt.Errorf("%w: exec %s: %w", ErrCommand, s.Argv[0], err)
}

// lookPath finds the command as a shell would, with the wrapper's PATH.
func lookPath(name string) (string, int, error) {
	path, err := exec.LookPath(name)
	switch {
	case err == nil:
		return path, 0, nil
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return "", ExitNotFound, fmt.Errorf("%w: %s: not found", ErrCommand, name)
	default:
		return "", ExitCannotRun, fmt.Errorf("%w: %s: %v", ErrCommand, name, unwrapPath(err))
	}
}

func unwrapPath(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}
