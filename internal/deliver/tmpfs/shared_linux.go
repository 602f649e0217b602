package tmpfs

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// A tmpfs found at the target directory is reused only if it is private to
// the container: `docker run --tmpfs` (created by the runtime inside the
// container's mount namespace) or our own mount from an earlier Apply. A
// named volume (`docker volume create --opt type=tmpfs`), or a bind mount of
// a host tmpfs (`-v /dev/shm/x:/run/secrets`), is one filesystem mounted in
// the host's namespace too, and in every other container that mounts it:
// whoever can read it there would read the values.
//
// The test, for the superblock (major:minor) of the target's mount:
//
//  1. it is mounted in no other mount namespace among those that would hold
//     any filesystem shared with the container. The one that must be
//     checked is that of the container's parent process (the runtime's
//     shim): the runtime bind-mounted every volume and host path into the
//     container from there (a source must be mounted where the runtime
//     resolves it, and a volume stays mounted there while a container uses
//     it), and every other container's volumes come from the same place.
//     Then, when they differ from it, the host's (pid 1's) and the agent's
//     (the helper's parent's). pid 1's is skipped only if the kernel
//     refuses to show it (a sandbox whose init holds capabilities the
//     agent lacks); any other failure to read a namespace fails closed.
//  2. the target's mount has no propagation peers or master (mountinfo
//     optional fields shared:N or master:N): such a mount is the same
//     filesystem as a mount in another namespace, whichever that is.

// sharedError: the target is a tmpfs that other namespaces see. The
// Deliverer reports it as ErrSharedTmpfs.
type sharedError struct{ codedError }

func (e *sharedError) Unwrap() error { return &e.codedError }

func sharedf(dir, format string, args ...any) *sharedError {
	msg := fmt.Sprintf("%s is a shared volume: ", dir) + fmt.Sprintf(format, args...) +
		"; Coffer will not write secrets where other containers or the host can read them"
	return &sharedError{codedError{code: codeShared, msg: msg}}
}

// nsMounts is what one other mount namespace has of a filesystem.
type nsMounts struct {
	who    string            // e.g. "the host's mount namespace (pid 1)"
	mounts []*mountinfo.Info // its mounts of the filesystem in question
}

// sharedTmpfs returns a *sharedError if target (the container's mount at
// dir) is the same filesystem as a mount in others, or propagates with
// another namespace; nil if it is private.
func sharedTmpfs(dir string, target *mountinfo.Info, others []nsMounts) error {
	for _, ns := range others {
		for _, m := range ns.mounts {
			if m.Major == target.Major && m.Minor == target.Minor {
				return sharedf(dir, "the same tmpfs (%d:%d) is mounted in %s at %s", target.Major, target.Minor, ns.who, m.Mountpoint)
			}
		}
	}
	for _, opt := range strings.Fields(target.Optional) {
		if strings.HasPrefix(opt, "shared:") || strings.HasPrefix(opt, "master:") {
			return sharedf(dir, "its mount propagates with another mount namespace (%s)", opt)
		}
	}
	return nil
}

// nsID names a mount namespace: the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

func (h *helperState) mountNS(pid int) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(h.proc, strconv.Itoa(pid)+"/ns/mnt", &st, 0); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

// otherNamespaces returns, for the namespaces sharedTmpfs must compare
// with (see above; each once, never the container's own), their mounts of
// the filesystem major:minor. It fails closed: a namespace it cannot read
// is an error, not an absence, except that pid 1's may be hidden.
func (h *helperState) otherNamespaces(dir string, pid, major, minor int) ([]nsMounts, error) {
	own, err := h.mountNS(pid)
	if err != nil {
		return nil, fail(codeGone, "process %d: %v", pid, err)
	}
	stat, err := readAt(h.proc, strconv.Itoa(pid)+"/stat", 64<<10)
	if err != nil {
		return nil, fail(codeGone, "process %d: %v", pid, err)
	}
	ppid, err := parsePPID(stat)
	if err != nil {
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	candidates := []struct {
		pid     int
		who     string
		mayHide bool
		isHost  bool
	}{
		{pid: ppid, who: fmt.Sprintf("the mount namespace of the container's runtime (pid %d)", ppid)},
		{pid: 1, who: "the host's mount namespace (pid 1)", mayHide: true, isHost: true},
		{pid: h.agentPID, who: fmt.Sprintf("the agent's mount namespace (pid %d)", h.agentPID)},
	}
	seen := map[nsID]bool{own: true}
	var out []nsMounts
	for _, c := range candidates {
		if c.pid <= 0 {
			continue
		}
		id, err := h.mountNS(c.pid)
		if c.mayHide && (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cannot check %s is not shared: %s: %w", dir, c.who, err)
		}
		if id == own && c.isHost {
			return nil, sharedf(dir, "the container shares the host's mount namespace")
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		mi, err := readAt(h.proc, strconv.Itoa(c.pid)+"/mountinfo", 8<<20)
		if err != nil {
			return nil, fmt.Errorf("cannot check %s is not shared: %s: %w", dir, c.who, err)
		}
		ms, err := mountsOfDevice(mi, major, minor)
		if err != nil {
			return nil, fmt.Errorf("mountinfo of %s: %w", c.who, err)
		}
		out = append(out, nsMounts{who: c.who, mounts: ms})
	}
	return out, nil
}

var errBadStat = errors.New("malformed /proc/<pid>/stat")

// parsePPID returns the parent pid from the contents of /proc/<pid>/stat:
// "pid (comm) state ppid ...", where comm may hold spaces and parentheses.
func parsePPID(stat []byte) (int, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errBadStat
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 2 {
		return 0, errBadStat
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil || ppid < 0 {
		return 0, errBadStat
	}
	return ppid, nil
}
