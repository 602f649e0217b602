package execwrap

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// forwarded are the signals the supervisor passes on to its child.
// SIGURG is not among them: the Go runtime sends it to itself.
var forwarded = []os.Signal{
	syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGUSR2,
	syscall.SIGWINCH, syscall.SIGALRM, syscall.SIGCONT, syscall.SIGTTIN, syscall.SIGTTOU,
}

// terminating signals end the supervisor with its child: no restart after.
func terminating(sig os.Signal) bool {
	return sig == syscall.SIGINT || sig == syscall.SIGTERM || sig == syscall.SIGQUIT
}

// child is one run of the command.
type child struct {
	p   *os.Process
	pid int
}

// supervisor runs s's command and restarts it when a file changes.
type supervisor struct {
	s       *Spec
	path    string
	reapAll bool // we are pid 1: orphans are ours to reap
	sigs    chan os.Signal
	chld    chan os.Signal
	cur     *child
	stop    os.Signal // the terminating signal received, if any
}

func supervise(ctx context.Context, s *Spec, path string) (int, error) {
	sv := &supervisor{s: s, path: path, reapAll: os.Getpid() == 1,
		sigs: make(chan os.Signal, 32), chld: make(chan os.Signal, 1)}
	signal.Notify(sv.sigs, forwarded...)
	defer signal.Stop(sv.sigs)
	signal.Notify(sv.chld, syscall.SIGCHLD)
	defer signal.Stop(sv.chld)

	e, err := load(s)
	if err != nil {
		return 1, err
	}
	running := stateOf(s) // the files the child's environment was read from
	if err := sv.start(e); err != nil {
		return ExitCannotRun, err
	}
	seen, since := running, time.Now()
	warned := false
	tick := time.NewTicker(s.Poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			sv.signal(syscall.SIGTERM)
			ws := sv.waitExit(s.Grace, true)
			return exitCode(ws), ctx.Err()
		case sig := <-sv.sigs:
			sv.signal(sig)
			if terminating(sig) {
				sv.stop = sig
			}
		case <-sv.chld:
			if ws, ok := sv.reap(); ok {
				return exitCode(ws), nil
			}
		case <-tick.C:
			if ws, ok := sv.reap(); ok { // a SIGCHLD may have been coalesced
				return exitCode(ws), nil
			}
			if sv.stop != nil {
				continue
			}
			now := stateOf(s)
			if !maps.Equal(now, seen) {
				seen, since = now, time.Now()
				continue
			}
			// Settled for a poll interval: a rotation of several files
			// makes one restart.
			if maps.Equal(now, running) || time.Since(since) < s.Poll {
				continue
			}
			if gone := absentIn(now); len(gone) > 0 {
				if !warned {
					s.Logger.Warn("secret files removed (revoked?); the child keeps running with the values it has", "files", strings.Join(gone, ", "))
					warned = true
				}
				continue
			}
			warned = false
			changed := changedIn(running, now)
			e, err := load(s)
			running = now
			if err != nil {
				s.Logger.Error("secret files changed but cannot be read; the child keeps running with the values it has", "err", err)
				continue
			}
			s.Logger.Info("secret files changed; restarting the child", "files", strings.Join(changed, ", "), "grace", s.Grace)
			ws, exited := sv.terminate()
			if sv.stop != nil {
				e.Zero()
				if exited {
					return exitCode(ws), nil
				}
				return 128 + int(sv.stop.(syscall.Signal)), nil
			}
			if err := sv.start(e); err != nil {
				return ExitCannotRun, err
			}
		}
	}
}

// start runs the command with e's variables, and zeroes e.
func (sv *supervisor) start(e *environ) error {
	defer e.Zero()
	p, err := os.StartProcess(sv.path, sv.s.Argv, &os.ProcAttr{
		Env:   childEnv(os.Environ(), e),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
	})
	if err != nil {
		return fmt.Errorf("%w: start %s: %v", ErrCommand, sv.s.Argv[0], unwrapPath(err))
	}
	sv.cur = &child{p: p, pid: p.Pid}
	sv.s.Logger.Info("started", "command", sv.s.Argv[0], "pid", p.Pid, "variables", strings.Join(e.names, ","))
	sv.s.record(p.Pid, true, e)
	return nil
}

func (sv *supervisor) signal(sig os.Signal) {
	if sv.cur != nil {
		_ = sv.cur.p.Signal(sig) // gone already: its exit is reaped next
	}
}

// reap collects exited processes without blocking and reports the
// child's status once it exited.
func (sv *supervisor) reap() (syscall.WaitStatus, bool) {
	if sv.cur == nil {
		return 0, false
	}
	for {
		var ws syscall.WaitStatus
		who := sv.cur.pid
		if sv.reapAll {
			who = -1
		}
		pid, err := syscall.Wait4(who, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return 0, false
		}
		if pid == sv.cur.pid {
			sv.cur.p.Release()
			sv.cur = nil
			return ws, true
		}
	}
}

// waitExit waits up to d for the child to exit; with kill, it is then
// killed and waited for.
func (sv *supervisor) waitExit(d time.Duration, kill bool) syscall.WaitStatus {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		if ws, ok := sv.reap(); ok {
			return ws
		}
		select {
		case <-sv.chld:
		case <-poll.C:
		case sig := <-sv.sigs:
			sv.signal(sig)
			if terminating(sig) {
				sv.stop = sig
			}
		case <-deadline.C:
			if !kill || sv.cur == nil {
				return 0
			}
			sv.s.Logger.Warn("child did not exit after SIGTERM within the grace period; killing it", "pid", sv.cur.pid, "grace", d)
			sv.signal(syscall.SIGKILL)
			kill = false
			deadline.Reset(time.Minute)
		}
	}
}

// terminate stops the child for a restart: SIGTERM, the grace period,
// SIGKILL. exited reports that it was gone already, or exited of itself.
func (sv *supervisor) terminate() (ws syscall.WaitStatus, exited bool) {
	if sv.cur == nil {
		return 0, true
	}
	sv.signal(syscall.SIGTERM)
	return sv.waitExit(sv.s.Grace, true), false
}

func exitCode(ws syscall.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return 1
}

func absentIn(st map[string]fileState) []string {
	var out []string
	for f, s := range st {
		if !s.present {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	return out
}

func changedIn(a, b map[string]fileState) []string {
	var out []string
	for f, s := range b {
		if a[f] != s {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	return out
}
