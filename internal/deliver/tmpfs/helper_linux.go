package tmpfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

const (
	helperEnv = "COFFER_DELIVER_HELPER" // set to "1" in the helper's environment
	helperArg = "--coffer-deliver-helper"
	helperFD  = 3 // the socketpair end, passed as the first extra file
	// maxConcurrent bounds the requests a helper serves at once (each on a
	// thread of its own).
	maxConcurrent = 16
)

// Init must be the first call in main (and in TestMain) of every binary that
// uses a Deliverer: in the process the Deliverer starts as its helper, Init
// serves requests and exits; anywhere else it returns at once.
func Init() {
	if os.Getenv(helperEnv) != "1" || len(os.Args) < 2 || os.Args[1] != helperArg {
		return
	}
	os.Exit(runHelper(os.NewFile(helperFD, "coffer-deliver")))
}

// helperState is the helper process's shared state.
type helperState struct {
	conn  *os.File
	proc  int // O_PATH fd of the host's /proc, valid in any mount namespace
	wmu   sync.Mutex
	locks keyedMutex
	pid   int
	// agentPID is the helper's parent, the agent (the helper dies with it).
	agentPID int

	swapMu sync.Mutex
	swap   bool
	swapAt time.Time
}

func runHelper(conn *os.File) int {
	// No core dumps and no ptrace by non-root of a process holding values.
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	proc, err := unix.Open("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "coffer-deliver-helper: open /proc: %v\n", err)
		return 1
	}
	h := &helperState{conn: conn, proc: proc, pid: os.Getpid(), agentPID: os.Getppid()}
	h.send(&response{Code: codeOK, Message: "ready"})

	sem := make(chan struct{}, maxConcurrent)
	for {
		payload, err := readFrame(conn)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return 0 // the agent closed its end
			}
			fmt.Fprintf(os.Stderr, "coffer-deliver-helper: read: %v\n", err)
			return 1
		}
		req, err := decodeRequest(payload)
		if err != nil {
			clear(payload)
			fmt.Fprintf(os.Stderr, "coffer-deliver-helper: %v\n", err)
			return 1
		}
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			resp := h.serve(req)
			clear(payload) // the values alias it
			h.send(resp)
		}()
	}
}

func (h *helperState) send(r *response) {
	b := encodeResponse(r)
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if err := writeFull(h.conn, b); err != nil {
		fmt.Fprintf(os.Stderr, "coffer-deliver-helper: write: %v\n", err)
		os.Exit(1)
	}
}

// serve runs req on a fresh OS thread that dies afterwards, one request per
// container at a time.
func (h *helperState) serve(req *request) *response {
	unlock := h.locks.lock(req.ContainerID)
	defer unlock()
	done := make(chan *response, 1)
	go func() {
		// Never unlocked: the thread may enter the container's mount
		// namespace, so the runtime must destroy it when this goroutine
		// returns instead of reusing it.
		runtime.LockOSThread()
		done <- h.work(req)
	}()
	r := <-done
	r.ID = req.ID
	return r
}

// codedError carries a response code and a message without values.
type codedError struct {
	code uint8
	msg  string
}

func (e *codedError) Error() string { return e.msg }

func fail(code uint8, format string, args ...any) error {
	return &codedError{code: code, msg: fmt.Sprintf(format, args...)}
}

// work does one request on the calling thread, which it taints.
func (h *helperState) work(req *request) *response {
	var flags uint8
	written, removed, err := h.apply(req, &flags)
	if err != nil {
		var ce *codedError
		if !errors.As(err, &ce) {
			ce = &codedError{code: codeFailed, msg: err.Error()}
		}
		return &response{Code: ce.code, Flags: flags, Message: ce.msg}
	}
	return &response{Code: codeOK, Flags: flags, Written: uint16(written), Removed: uint16(removed)}
}

func (h *helperState) apply(req *request, flags *uint8) (written, removed int, err error) {
	if err := validateRequest(req); err != nil {
		return 0, 0, fail(codeInvalid, "%v", err)
	}
	pid := int(req.PID)

	// Pin the process, then check it is the container's: a reused pid
	// would fail the cgroup check, and a pid reused after the check would
	// fail the liveness check on the pidfd, which names one process forever.
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return 0, 0, fail(codeGone, "process %d is gone", pid)
		}
		return 0, 0, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	cgroup, err := readAt(h.proc, strconv.Itoa(pid)+"/cgroup", 64<<10)
	if err != nil {
		return 0, 0, fail(codeGone, "process %d: %v", pid, err)
	}
	if !bytes.Contains(cgroup, []byte(req.ContainerID)) {
		return 0, 0, fail(codeGone, "process %d does not belong to container %s", pid, req.ContainerID)
	}
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		return 0, 0, fail(codeGone, "process %d is gone", pid)
	}
	swapOn, err := h.swapOn()
	if err != nil {
		return 0, 0, err
	}

	// Enter the container's mount namespace: this thread's root and
	// working directory become the container's.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return 0, 0, fmt.Errorf("unshare(CLONE_FS): %w", err)
	}
	if err := unix.Setns(pidfd, unix.CLONE_NEWNS); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return 0, 0, fail(codeGone, "process %d is gone", pid)
		}
		return 0, 0, fmt.Errorf("setns into mount namespace of %d: %w", pid, err)
	}
	// The container's mount table, read through the host's /proc (the fd
	// works from any namespace) only when a decision needs it, once.
	var table []*mountinfo.Info
	mounts := func() ([]*mountinfo.Info, error) {
		if table != nil {
			return table, nil
		}
		mi, err := readAt(h.proc, strconv.Itoa(pid)+"/mountinfo", 8<<20)
		if err != nil {
			return nil, fail(codeGone, "process %d: %v", pid, err)
		}
		m, err := mountinfo.GetMountsFromReader(bytes.NewReader(mi), nil)
		if err != nil {
			return nil, fmt.Errorf("mountinfo of %d: %w", pid, err)
		}
		table = m
		return m, nil
	}
	private := func(target *mountinfo.Info) error {
		others, err := h.otherNamespaces(req.Dir, pid, target.Major, target.Minor)
		if err != nil {
			return err
		}
		return sharedTmpfs(req.Dir, target, others)
	}
	dirfd, err := openTarget(req, mounts, private, swapOn, flags)
	if errors.Is(err, errNoTarget) {
		return 0, 0, nil // nothing wanted and nothing there: touch nothing
	}
	var shared *sharedError
	if errors.As(err, &shared) {
		return 0, 0, h.revokeShared(req, mounts, swapOn, flags, shared)
	}
	if err != nil {
		return 0, 0, err
	}
	defer unix.Close(dirfd)
	return syncFiles(dirfd, req, h.pid, flags)
}

// revokeShared answers a request refused because its target is a shared
// tmpfs: nothing is written, and files Coffer put there earlier (an older
// agent did not check) are removed, as an Apply that wants no file would.
// It returns the refusal.
func (h *helperState) revokeShared(req *request, mounts func() ([]*mountinfo.Info, error), swapOn bool, flags *uint8, refusal *sharedError) error {
	none := *req
	none.Files = nil
	fd, err := openTarget(&none, mounts, nil, swapOn, flags)
	if err != nil {
		return refusal
	}
	defer unix.Close(fd)
	if _, removed, err := syncFiles(fd, &none, h.pid, flags); err == nil && removed > 0 {
		refusal.msg += fmt.Sprintf(" (%d file(s) Coffer had put there were removed)", removed)
	}
	return refusal
}

// swapCacheFor is how long a reading of /proc/swaps is trusted.
const swapCacheFor = time.Second

// swapOn reports whether any swap area is active, reading /proc/swaps at
// most once per swapCacheFor.
func (h *helperState) swapOn() (bool, error) {
	h.swapMu.Lock()
	defer h.swapMu.Unlock()
	if time.Since(h.swapAt) < swapCacheFor {
		return h.swap, nil
	}
	b, err := readAt(h.proc, "swaps", 1<<20)
	if err != nil {
		return false, fmt.Errorf("read /proc/swaps: %w", err)
	}
	h.swap, h.swapAt = swapActive(b), time.Now()
	return h.swap, nil
}

// swapActive parses /proc/swaps: a header line, then one line per area.
func swapActive(procSwaps []byte) bool {
	lines := strings.Split(strings.TrimSpace(string(procSwaps)), "\n")
	return len(lines) > 1
}

// noswapDecision says how to mount given whether the kernel accepts noswap
// and whether swap is on: with noswap; without it (swap is off, so nothing
// can be swapped out: warn); or not at all (fail closed).
func noswapDecision(supported, swapOn bool) (fallback bool, err error) {
	switch {
	case supported:
		return false, nil
	case swapOn:
		return false, fail(codeNoSwap, "kernel rejects tmpfs noswap and swap is on")
	default:
		return true, nil
	}
}

// openTarget opens req.Dir in the current (container) mount namespace as a
// tmpfs, mounting one if needed, and returns a directory fd on its root.
// errNoTarget: an Apply that wants no file found no tmpfs of ours to clean.
var errNoTarget = errors.New("no target")

// openTarget opens the tmpfs at req.Dir, mounting one if needed. An Apply
// that wants no file never creates or mounts anything: a container that is
// bound to nothing gets nothing, not even an empty mount. An existing tmpfs
// is written to only if private accepts its mount (a *sharedError
// otherwise); an Apply that wants no file only removes, and skips that check.
func openTarget(req *request, mounts func() ([]*mountinfo.Info, error), private func(*mountinfo.Info) error, swapOn bool, flags *uint8) (int, error) {
	empty := len(req.Files) == 0
	tfd, err := walkDir(req.Dir, !empty)
	if empty && errors.Is(err, unix.ENOENT) {
		return -1, errNoTarget
	}
	if err != nil {
		return -1, err
	}
	defer unix.Close(tfd)

	var stx unix.Statx_t
	if err := unix.Statx(tfd, "", unix.AT_EMPTY_PATH, unix.STATX_TYPE|unix.STATX_MNT_ID, &stx); err != nil {
		return -1, fmt.Errorf("statx %s: %w", req.Dir, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(tfd, &sfs); err != nil {
		return -1, fmt.Errorf("statfs %s: %w", req.Dir, err)
	}
	mountRoot := stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0

	if sfs.Type == unix.TMPFS_MAGIC && mountRoot {
		// Already a tmpfs (ours from an earlier Apply, or the container's
		// own --tmpfs): use it, unless other namespaces see it or swap
		// could take its pages.
		if !empty || swapOn {
			all, err := mounts()
			if err != nil {
				return -1, err
			}
			mnt := findMount(all, int(stx.Mnt_id))
			if mnt == nil {
				return -1, fmt.Errorf("mount %d at %s not in the container's mountinfo", stx.Mnt_id, req.Dir)
			}
			if !empty {
				if err := private(mnt); err != nil {
					return -1, err
				}
			}
			if swapOn && !hasOption(mnt.VFSOptions, "noswap") {
				return -1, fail(codeNoSwap, "%s is a tmpfs without noswap and swap is on", req.Dir)
			}
		}
		fd, err := unix.Openat(tfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("open %s: %w", req.Dir, err)
		}
		*flags |= flagReused
		return fd, nil
	}
	if empty {
		return -1, errNoTarget
	}

	all, err := mounts()
	if err != nil {
		return -1, err
	}
	mnt := findMount(all, int(stx.Mnt_id))
	if mnt == nil {
		return -1, fmt.Errorf("mount %d under %s not in the container's mountinfo", stx.Mnt_id, req.Dir)
	}
	if strings.Contains(mnt.Optional, "shared:") {
		return -1, fail(codeUnsafePath, "%s is on a shared mount (%s): a tmpfs mounted there would propagate to other namespaces", req.Dir, mnt.Mountpoint)
	}
	return mountTmpfs(tfd, req, swapOn, flags)
}

func mountTmpfs(tfd int, req *request, swapOn bool, flags *uint8) (int, error) {
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen tmpfs: %w", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigSetString(fsfd, "size", strconv.FormatUint(req.SizeBytes, 10)); err != nil {
		return -1, fmt.Errorf("tmpfs size=%d: %w", req.SizeBytes, err)
	}
	if err := unix.FsconfigSetString(fsfd, "mode", "0711"); err != nil {
		return -1, fmt.Errorf("tmpfs mode: %w", err)
	}
	supported := true
	if err := unix.FsconfigSetFlag(fsfd, "noswap"); err != nil {
		if !errors.Is(err, unix.EINVAL) {
			return -1, fmt.Errorf("tmpfs noswap: %w", err)
		}
		supported = false
	}
	fallback, err := noswapDecision(supported, swapOn)
	if err != nil {
		return -1, err
	}
	if fallback {
		*flags |= flagNoSwapFallback
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("create tmpfs: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsmount tmpfs: %w", err)
	}
	defer unix.Close(mfd)
	// Attach by fd: no path is resolved again, so nothing the container
	// does meanwhile can redirect the mount.
	if err := unix.MoveMount(mfd, "", tfd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return -1, fmt.Errorf("mount tmpfs on %s: %w", req.Dir, err)
	}
	*flags |= flagMounted
	fd, err := unix.Openat(mfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open new tmpfs: %w", err)
	}
	return fd, nil
}

// walkDir opens the absolute path dir from "/", creating missing
// components if create is set, without following any symlink, and returns an
// O_PATH fd.
func walkDir(dir string, create bool) (int, error) {
	cur, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /: %w", err)
	}
	walked := ""
	for _, comp := range strings.Split(strings.TrimPrefix(dir, "/"), "/") {
		walked += "/" + comp
		next, err := openDirNoFollow(cur, comp)
		if errors.Is(err, unix.ENOENT) && !create {
			unix.Close(cur)
			return -1, err
		}
		if errors.Is(err, unix.ENOENT) {
			if err := unix.Mkdirat(cur, comp, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
				unix.Close(cur)
				return -1, fmt.Errorf("mkdir %s: %w", walked, err)
			}
			next, err = openDirNoFollow(cur, comp)
		}
		unix.Close(cur)
		switch {
		case errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV):
			return -1, fail(codeUnsafePath, "%s is a symlink: refusing to follow it", walked)
		case errors.Is(err, unix.ENOTDIR):
			return -1, fail(codeUnsafePath, "%s is not a directory", walked)
		case err != nil:
			return -1, fmt.Errorf("open %s: %w", walked, err)
		}
		cur = next
	}
	return cur, nil
}

func openDirNoFollow(dirfd int, name string) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, name, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_BENEATH,
		})
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		return fd, err
	}
}

func findMount(mounts []*mountinfo.Info, id int) *mountinfo.Info {
	for _, m := range mounts {
		if m.ID == id {
			return m
		}
	}
	return nil
}

func hasOption(opts, want string) bool {
	for o := range strings.SplitSeq(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// readAt reads the file name under dirfd, up to limit bytes.
func readAt(dirfd int, name string, limit int) ([]byte, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var buf []byte
	chunk := make([]byte, 16<<10)
	for {
		n, err := unix.Read(fd, chunk)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return buf, nil
		}
		buf = append(buf, chunk[:n]...)
		if len(buf) > limit {
			return nil, fmt.Errorf("%s larger than %d bytes", name, limit)
		}
	}
}

// keyedMutex serializes work per key, forgetting keys nobody holds.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
