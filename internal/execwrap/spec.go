// Package execwrap is `coffer exec`: an entrypoint wrapper that puts the
// values of delivered secret files into its child's environment, and only
// there.
//
// It reads files the agent delivered into the container's tmpfs
// (/run/secrets by default), waits for them if asked (bounded), and then
// either replaces itself with the child (syscall.Exec: the child is the
// container's main process) or, with RestartOnChange, supervises it:
// signals are forwarded, a change of any watched file restarts the child
// gracefully with the new values (SIGTERM, a grace period, SIGKILL), and
// the wrapper exits with the child's code.
//
// Values never appear in argv (the wrapper's or the child's), in the
// image's or container's configuration (`docker inspect`), or in anything
// the wrapper writes: errors and logs name variables and files, never
// contents. The wrapper zeroes its buffers once the child has started; the
// copies the kernel and the Go runtime make for execve are outside its
// reach (see docs/consumers.md).
package execwrap

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"coffer/internal/secret"
)

// Sentinel errors, returned wrapped.
var (
	// ErrUsage: a bad name, file or option; nothing was started.
	ErrUsage = errors.New("invalid arguments")
	// ErrMissing: a file is not there (without Wait), or not readable.
	ErrMissing = errors.New("secret file missing")
	// ErrTimeout: Wait gave up before every file was there.
	ErrTimeout = errors.New("timed out waiting for secret files")
	// ErrValue: a value cannot be an environment variable (a NUL byte, too
	// long for execve).
	ErrValue = errors.New("value unusable as an environment variable")
	// ErrCommand: the command cannot be found or run.
	ErrCommand = errors.New("command")
)

// DefaultDir is where the agent delivers files.
const DefaultDir = "/run/secrets"

// Defaults of Spec's durations.
const (
	DefaultTimeout = 30 * time.Second
	DefaultGrace   = 10 * time.Second
	DefaultPoll    = 250 * time.Millisecond
)

// maxEnvString is the kernel's limit on one "NAME=value" string for execve
// (MAX_ARG_STRLEN, 32 pages), less its NUL.
const maxEnvString = 32*4096 - 1

// EnvVar puts the content of File (a name under Spec.Dir) in variable Name.
type EnvVar struct {
	Name string
	File string
}

// Spec is one `coffer exec` invocation.
type Spec struct {
	Dir       string   // where the files are; DefaultDir if empty
	Env       []EnvVar // --env NAME=FILE
	EnvFiles  []string // --env-file FILE: files of NAME=VALUE lines (see ParseDotenv)
	WaitFiles []string // --wait-file FILE: waited for (and watched), not read
	Wait      bool     // wait for the files (up to Timeout) instead of failing at once
	Timeout   time.Duration
	// RestartOnChange supervises the child and restarts it when a file
	// changes (the restart-process contract). Without it the wrapper
	// execs the child.
	RestartOnChange bool
	Grace           time.Duration // SIGTERM to SIGKILL on a restart
	Poll            time.Duration // how often files are looked at while waiting or watching
	Argv            []string      // the command and its arguments
	Logger          *slog.Logger  // the wrapper's own messages (never a value); nil discards

	recordWarned bool // the last record could not be written, and that was said
}

// ParseEnv parses --env NAME=FILE.
func ParseEnv(s string) (EnvVar, error) {
	name, file, ok := strings.Cut(s, "=")
	if !ok {
		return EnvVar{}, fmt.Errorf("%w: --env %q: want NAME=FILE (a file under the secrets directory)", ErrUsage, s)
	}
	return EnvVar{Name: name, File: file}, nil
}

// ValidName reports whether s is a portable environment variable name:
// a letter or '_', then letters, digits and '_'.
func ValidName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// normalize checks s and fills in the defaults.
func (s *Spec) normalize() error {
	if s.Dir == "" {
		s.Dir = DefaultDir
	}
	if !filepath.IsAbs(s.Dir) {
		return fmt.Errorf("%w: --dir %q: must be an absolute path", ErrUsage, s.Dir)
	}
	s.Dir = filepath.Clean(s.Dir)
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	if s.Grace <= 0 {
		s.Grace = DefaultGrace
	}
	if s.Poll <= 0 {
		s.Poll = DefaultPoll
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	if len(s.Argv) == 0 || s.Argv[0] == "" {
		return fmt.Errorf("%w: no command: give it after --, e.g. coffer exec --env DB_PASSWORD=db-password -- ./server", ErrUsage)
	}
	if len(s.Env) == 0 && len(s.EnvFiles) == 0 && len(s.WaitFiles) == 0 {
		return fmt.Errorf("%w: nothing to do: give --env NAME=FILE, --env-file FILE or --wait-file FILE", ErrUsage)
	}
	seen := map[string]string{}
	for _, e := range s.Env {
		if !ValidName(e.Name) {
			return fmt.Errorf("%w: --env %s=%s: %q is not a valid variable name (a letter or _, then letters, digits, _)", ErrUsage, e.Name, e.File, e.Name)
		}
		if prev, dup := seen[e.Name]; dup {
			return fmt.Errorf("%w: --env %s given twice (files %s and %s)", ErrUsage, e.Name, prev, e.File)
		}
		seen[e.Name] = e.File
		if err := checkFile(e.File); err != nil {
			return fmt.Errorf("%w: --env %s=%s: %w", ErrUsage, e.Name, e.File, err)
		}
	}
	for _, f := range s.EnvFiles {
		if err := checkFile(f); err != nil {
			return fmt.Errorf("%w: --env-file %s: %w", ErrUsage, f, err)
		}
	}
	for _, f := range s.WaitFiles {
		if err := checkFile(f); err != nil {
			return fmt.Errorf("%w: --wait-file %s: %w", ErrUsage, f, err)
		}
	}
	return nil
}

// checkFile accepts a file name as the agent delivers it: one path element.
func checkFile(f string) error {
	if err := secret.ValidateFileName(f); err != nil {
		return fmt.Errorf("a file directly under the secrets directory: %w", err)
	}
	return nil
}

// files lists every file the spec needs, each once, in order.
func (s *Spec) files() []string {
	var out []string
	seen := map[string]bool{}
	add := func(f string) {
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	for _, e := range s.Env {
		add(e.File)
	}
	for _, f := range s.EnvFiles {
		add(f)
	}
	for _, f := range s.WaitFiles {
		add(f)
	}
	return out
}
