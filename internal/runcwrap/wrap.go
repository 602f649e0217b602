package runcwrap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"coffer/internal/container"
	"coffer/internal/hook"
)

// Config configures one run of the wrapper.
type Config struct {
	// Runc is the real runc: an absolute path, never looked up in PATH.
	Runc string
	// Socket is the agent's hook socket (coffer-agent --hook-socket).
	Socket string
	// HookTimeout is the hook's wait for the agent (`coffer-agent hook
	// --timeout`); the hook's OCI timeout, after which runc kills it and
	// fails the start, is 5 s more.
	HookTimeout time.Duration
	// Self is the absolute path of coffer-agent, which the hook runs.
	Self string
	// Lookup reads a container the engine is starting
	// (docker.Runtime.Creating): its labels say whether it requires its
	// secrets (hook.RequiredByLabels). An error wrapping ErrNotEngines
	// means the engine does not know it as being started.
	Lookup func(ctx context.Context, id string) (container.Info, error)
	// LookupTimeout bounds Lookup (default 2 s).
	LookupTimeout time.Duration
	Stderr        io.Writer
	// Exec replaces the process (default syscall.Exec); Env is the
	// environment runc gets (default os.Environ()); Cwd resolves a
	// relative bundle (default the working directory).
	Exec func(path string, argv, env []string) error
	Env  []string
	Cwd  string
}

// ErrNotEngines: Lookup does not know the container as one being
// started (not the engine's, or not starting): it is not required.
var ErrNotEngines = errors.New("not a container the engine is starting")

// loopEnv marks the real runc's environment: a wrapper that finds it set
// was configured to run itself as the real runc.
const loopEnv = "COFFER_RUNC_WRAPPED"

// DefaultRunc is the real runc's default path (Debian and Docker's
// packages both install it there).
const DefaultRunc = "/usr/bin/runc"

// Check validates cfg's paths and durations.
func (cfg *Config) Check() error {
	for _, p := range []struct{ flag, path string }{{"--runc", cfg.Runc}, {"--hook-socket", cfg.Socket}, {"coffer-agent's own path", cfg.Self}} {
		if !filepath.IsAbs(p.path) || filepath.Clean(p.path) != p.path || strings.HasSuffix(p.path, " (deleted)") {
			return fmt.Errorf("%s %q: want a clean absolute path", p.flag, clip(p.path))
		}
	}
	if cfg.HookTimeout <= 0 || cfg.HookTimeout > time.Minute {
		return fmt.Errorf("--hook-timeout %v: want more than 0 and at most 1m", cfg.HookTimeout)
	}
	if cfg.Lookup == nil {
		return errors.New("runcwrap: Lookup is required")
	}
	fi, err := os.Stat(cfg.Runc)
	if err != nil {
		return fmt.Errorf("--runc: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("--runc %s: not an executable file", cfg.Runc)
	}
	if self, err := os.Stat(cfg.Self); err == nil && os.SameFile(fi, self) {
		return fmt.Errorf("--runc %s is coffer-agent itself, not the real runc", cfg.Runc)
	}
	return nil
}

// Run handles one runc command line (args without argv[0]): every
// command goes to the real runc untouched, by exec, except create, for
// which the bundle's config.json first gets the createRuntime hook
// `coffer-agent hook` and, for a container labelled
// coffer.require-secrets=true, the annotation coffer/require-secrets=true
// that makes the hook refuse its start when the agent cannot be reached.
// Run returns only when it does not exec: its result is the exit code.
func Run(cfg Config, args []string) int {
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if cfg.Exec == nil {
		cfg.Exec = syscall.Exec
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	if cfg.Cwd == "" {
		cfg.Cwd, _ = os.Getwd()
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = 2 * time.Second
	}
	call, perr := Parse(args, cfg.Cwd)
	fail := func(err error) int {
		msg := "coffer-runc: " + err.Error()
		fmt.Fprintln(cfg.Stderr, msg)
		logError(call, msg)
		return 1
	}
	for _, kv := range cfg.Env {
		if strings.HasPrefix(kv, loopEnv+"=") {
			return fail(fmt.Errorf("--runc %s runs the wrapper again: point it at the real runc", cfg.Runc))
		}
	}
	if err := cfg.Check(); err != nil {
		return fail(err)
	}
	if perr != nil {
		return fail(perr)
	}
	if call.Create() {
		if err := prepare(cfg, call); err != nil {
			return fail(err)
		}
	}
	env := append(cfg.Env[:len(cfg.Env):len(cfg.Env)], loopEnv+"=1")
	err := cfg.Exec(cfg.Runc, append([]string{cfg.Runc}, args...), env)
	return fail(fmt.Errorf("exec %s: %w", cfg.Runc, err))
}

// prepare adds the hook (and the annotation) to the bundle's spec. A
// container that requires its secrets is refused when that fails; any
// other starts without the hook (fail-open), its files following once
// the agent sees it running.
func prepare(cfg Config, call Call) error {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.LookupTimeout)
	info, err := cfg.Lookup(ctx, call.ID)
	cancel()
	required := false
	switch {
	case err == nil:
		required = hook.RequiredByLabels(info)
	case errors.Is(err, ErrNotEngines):
	default:
		return fmt.Errorf("container %s not started: cannot read its labels from the engine to tell whether it requires its secrets (label %s): %w", call.ID, hook.RequireLabel, err)
	}
	spec, perm, err := ReadSpec(call.Bundle)
	if err == nil {
		required = required || Annotations(spec)[hook.RequireAnnotation] == "true"
		secs := int(math.Ceil(cfg.HookTimeout.Seconds())) + 5
		p := Patch{Hook: Hook{
			Path:    cfg.Self,
			Args:    []string{cfg.Self, "hook", "--socket", cfg.Socket, "--timeout", cfg.HookTimeout.String()},
			Timeout: &secs,
		}}
		if required {
			p.Annotations = map[string]string{hook.RequireAnnotation: "true"}
		}
		var out []byte
		if out, err = Extend(spec, p); err == nil {
			err = WriteSpec(call.Bundle, out, perm)
		}
		clear(spec)
	}
	if err != nil {
		if required {
			return fmt.Errorf("container %s not started: it is labelled %s=true and its spec could not get the coffer hook: %w", call.ID, hook.RequireLabel, err)
		}
		msg := fmt.Sprintf("coffer-runc: container %s starts without early delivery (its files follow once the agent sees it): %v", call.ID, err)
		fmt.Fprintln(cfg.Stderr, msg)
		logLine(call, "warning", msg)
	}
	return nil
}

// logError appends msg to runc's log file, where the containerd shim
// reads the error it reports to Docker (`docker run` prints it).
func logError(call Call, msg string) { logLine(call, "error", msg) }

func logLine(call Call, level, msg string) {
	if call.Log == "" || !filepath.IsAbs(call.Log) {
		return
	}
	f, err := os.OpenFile(call.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if call.LogFormat == "json" {
		b, _ := json.Marshal(map[string]string{"level": level, "msg": msg, "time": now})
		_, _ = f.Write(append(b, '\n'))
		return
	}
	fmt.Fprintf(f, "time=%q level=%s msg=%q\n", now, level, msg)
}
