package execwrap

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"coffer/internal/execstate"
)

// record writes, into the secrets directory, what the process pid was
// started with: the files of e and a digest of each (never a value), so
// the agent can tell the server which version the process runs with (see
// package execstate). It writes only into a tmpfs (never a disk) and only
// where it may (root, in Coffer's 0711 tmpfs); otherwise it says once why
// the rollout will not show this process, and the command runs anyway.
func (s *Spec) record(pid int, restarts bool, e *environ) {
	err := writeRecord(s.Dir, execstate.State{PID: pid, Restarts: restarts, Files: e.digests})
	switch {
	case err == nil:
		s.recordWarned = false
	case !s.recordWarned:
		s.recordWarned = true
		s.Logger.Warn("cannot record what the process was started with; the rollout will not show which version it runs with", "err", err)
	}
}

var errNotTmpfs = errors.New("not a tmpfs: the record is written only into memory")

func writeRecord(dir string, st execstate.State) error {
	if err := onTmpfs(dir); err != nil {
		return err
	}
	data, err := execstate.Marshal(st)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, execstate.Name+".tmp-"+strconv.Itoa(os.Getpid()))
	_ = os.Remove(tmp) // left by an earlier process of ours with this pid
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, execstate.Name))
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
