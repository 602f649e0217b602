package execstate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ProcReader reads a container's record through /proc/<pid>/root, from
// the host: it needs root in the host's pid namespace, as the Deliverer.
type ProcReader struct {
	Dir  string // the secrets directory inside containers, as the Deliverer's
	Proc string // "/proc" if empty (tests)
}

// Read returns the raw record of container id, whose process pid is, at
// most MaxSize bytes. The path is resolved beneath the container's root
// without following any link; the record must be a regular file owned by
// root (only root can create files in Coffer's tmpfs).
func (r ProcReader) Read(_ context.Context, id string, pid int) ([]byte, error) {
	if pid <= 0 || id == "" {
		return nil, fmt.Errorf("%w: no process", ErrGone)
	}
	proc := r.Proc
	if proc == "" {
		proc = "/proc"
	}
	// Pin the process, check it is the container's, open its root, then
	// check the pinned process still lives: the root is then that process's.
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: pidfd_open %d: %v", ErrGone, pid, err)
	}
	defer unix.Close(pidfd)
	cg, err := readLimited(filepath.Join(proc, strconv.Itoa(pid), "cgroup"), 64<<10)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrGone, err)
	}
	if !bytes.Contains(cg, []byte(id)) {
		return nil, fmt.Errorf("%w: process %d does not belong to container %s", ErrGone, pid, id)
	}
	root, err := unix.Open(filepath.Join(proc, strconv.Itoa(pid), "root"), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: root of %d: %v", ErrGone, pid, err)
	}
	defer unix.Close(root)
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		return nil, fmt.Errorf("%w: process %d", ErrGone, pid)
	}
	rel := strings.TrimPrefix(filepath.Join(filepath.Clean("/"+r.Dir), Name), "/")
	fd, err := unix.Openat2(root, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, ErrNoRecord
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, rel, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, rel, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrInvalid, rel)
	case st.Uid != 0:
		return nil, fmt.Errorf("%w: %s is not owned by root", ErrInvalid, rel)
	case st.Size > MaxSize:
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrInvalid, rel, MaxSize)
	}
	// Only now open it for reading (a FIFO or a device never is), through
	// the fd already resolved.
	f, err := os.OpenFile(filepath.Join(proc, "self/fd", strconv.Itoa(fd)), os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, rel, err)
	}
	defer f.Close()
	var st2 unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st2); err != nil || st2.Ino != st.Ino || st2.Dev != st.Dev {
		return nil, fmt.Errorf("%w: %s changed while it was opened", ErrInvalid, rel)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, rel, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrInvalid, rel, MaxSize)
	}
	return b, nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s larger than %d bytes", path, limit)
	}
	return b, nil
}
