package hook

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// errNotHeld: the pid is not a container's process held before
// pivot_root by a createRuntime hook.
var errNotHeld = errors.New("not the container's process held by its createRuntime hook")

// heldProc is a container's process, checked and pinned.
type heldProc struct {
	pidfd   int
	pid     int
	root    string // the container's root in its mount namespace
	preRoot fileID // the process's root now (before pivot_root)
}

func (p *heldProc) close() { unix.Close(p.pidfd) }

// alive reports whether the pinned process still runs.
func (p *heldProc) alive() bool { return unix.PidfdSendSignal(p.pidfd, 0, nil, 0) == nil }

// pinHeld checks that pid is container id's process held before
// pivot_root, from the kernel alone: it is in the container's cgroup, in a
// mount namespace that is not the agent's, its root is still its parent's
// (runc create's), and its working directory, where runc starts its init
// (the container's root file system), is a mount point in its namespace.
// The pid is pinned with a pidfd first, so a reused pid fails the final
// liveness check.
func pinHeld(pid int, id string) (*heldProc, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: process %d: %v", errNotHeld, pid, err)
	}
	p := &heldProc{pidfd: pidfd, pid: pid}
	if err := p.check(id); err != nil {
		p.close()
		return nil, err
	}
	if !p.alive() {
		p.close()
		return nil, fmt.Errorf("%w: process %d exited", errNotHeld, pid)
	}
	return p, nil
}

func (p *heldProc) check(id string) error {
	dir := "/proc/" + strconv.Itoa(p.pid)
	cg, err := readLimited(dir+"/cgroup", 64<<10)
	if err != nil {
		return fmt.Errorf("%w: process %d: %v", errNotHeld, p.pid, err)
	}
	if !bytes.Contains(cg, []byte(id)) {
		return fmt.Errorf("%w: process %d is not in container %s's cgroup", errNotHeld, p.pid, id)
	}
	var own, theirs unix.Stat_t
	if err := unix.Stat("/proc/self/ns/mnt", &own); err != nil {
		return fmt.Errorf("own mount namespace: %w", err)
	}
	if err := unix.Stat(dir+"/ns/mnt", &theirs); err != nil {
		return fmt.Errorf("%w: process %d: %v", errNotHeld, p.pid, err)
	}
	if own.Ino == theirs.Ino && own.Dev == theirs.Dev {
		return fmt.Errorf("%w: process %d shares the agent's mount namespace", errNotHeld, p.pid)
	}
	ppid, err := parentOf(p.pid)
	if err != nil {
		return fmt.Errorf("%w: process %d: %v", errNotHeld, p.pid, err)
	}
	pre, err := procRootID(p.pid)
	if err != nil {
		return fmt.Errorf("%w: process %d: %v", errNotHeld, p.pid, err)
	}
	parent, err := procRootID(ppid)
	if err != nil {
		return fmt.Errorf("%w: parent %d of process %d: %v", errNotHeld, ppid, p.pid, err)
	}
	if pre != parent {
		return fmt.Errorf("%w: process %d has already entered its root", errNotHeld, p.pid)
	}
	cwd, err := os.Readlink(dir + "/cwd")
	if err != nil {
		return fmt.Errorf("%w: process %d: %v", errNotHeld, p.pid, err)
	}
	if !filepath.IsAbs(cwd) || filepath.Clean(cwd) != cwd || cwd == "/" || strings.HasSuffix(cwd, " (deleted)") || len(cwd) > maxPathBytes {
		return fmt.Errorf("%w: process %d works in %q, not a container's root", errNotHeld, p.pid, clip(cwd))
	}
	mi, err := readLimited(dir+"/mountinfo", 8<<20)
	if err != nil {
		return fmt.Errorf("%w: process %d: %v", errNotHeld, p.pid, err)
	}
	mounts, err := mountinfo.GetMountsFromReader(bytes.NewReader(mi), mountinfo.SingleEntryFilter(cwd))
	if err != nil {
		return fmt.Errorf("mountinfo of %d: %w", p.pid, err)
	}
	if len(mounts) == 0 {
		return fmt.Errorf("%w: process %d works in %s, which is no mount point in its namespace", errNotHeld, p.pid, clip(cwd))
	}
	p.root, p.preRoot = cwd, pre
	return nil
}

// procRootID is the device and inode of process pid's root directory.
func procRootID(pid int) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+strconv.Itoa(pid)+"/root", &st); err != nil {
		return fileID{}, err
	}
	return fileID{dev: st.Dev, ino: st.Ino}, nil
}

// parentOf reads a process's parent pid from /proc/<pid>/stat.
func parentOf(pid int) (int, error) {
	b, err := readLimited("/proc/"+strconv.Itoa(pid)+"/stat", 64<<10)
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unreadable stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, errors.New("unreadable stat")
	}
	return strconv.Atoi(f[1])
}

func readLimited(name string, limit int) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%s larger than %d bytes", name, limit)
	}
	return b, nil
}
