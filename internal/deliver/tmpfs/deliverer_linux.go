package tmpfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"coffer/internal/container"
	"coffer/internal/deliver"
	"coffer/internal/secret"
)

// helperStartTimeout bounds the wait for a new helper's first frame.
const helperStartTimeout = 10 * time.Second

// Deliverer delivers files into containers' tmpfs mounts through a helper
// process. It is safe for concurrent use.
type Deliverer struct {
	cfg    Config
	log    *slog.Logger
	nextID atomic.Uint64

	mu     sync.Mutex
	h      *helperProc // nil until needed, or after it died
	closed bool
}

var _ deliver.Deliverer = (*Deliverer)(nil)

// New returns a Deliverer. The helper starts with the first Apply.
func New(cfg Config) (*Deliverer, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("tmpfs: %w", err)
	}
	return &Deliverer{cfg: cfg, log: cfg.Logger.With("deliverer", "tmpfs")}, nil
}

// Close stops the helper. Apply fails with ErrClosed afterwards.
func (d *Deliverer) Close() error {
	d.mu.Lock()
	h := d.h
	d.h, d.closed = nil, true
	d.mu.Unlock()
	if h != nil {
		h.stop()
	}
	return nil
}

// Apply implements deliver.Deliverer. Its errors wrap ErrContainerGone,
// ErrUnsafePath, ErrSharedTmpfs, ErrInvalid, ErrHelper or
// deliver.ErrNoSwapProtection, or carry the failed operation (e.g. a read-only root, a full tmpfs). When
// ctx ends first, Apply returns ctx's error while the helper finishes the
// request (the next Apply for the container waits for it).
func (d *Deliverer) Apply(ctx context.Context, c container.Info, want []secret.File) error {
	return d.apply(ctx, c, d.cfg.Dir, want)
}

// apply makes dir, a path in the container's mount namespace, hold want.
func (d *Deliverer) apply(ctx context.Context, c container.Info, dir string, want []secret.File) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("tmpfs: apply to %s: %w", c.ID, err)
	}
	req := &request{
		ID:          d.nextID.Add(1),
		ContainerID: c.ID,
		Dir:         dir,
		SizeBytes:   uint64(d.cfg.SizeBytes),
		Files:       make([]wireFile, 0, len(want)),
	}
	if c.PID <= 0 {
		return fmt.Errorf("tmpfs: apply to %s: %w: no running process (pid %d)", c.ID, ErrContainerGone, c.PID)
	}
	if c.PID <= 1<<22 {
		req.PID = uint32(c.PID)
	}
	for _, f := range want {
		if f.Mode&^os.ModePerm != 0 {
			return fmt.Errorf("tmpfs: apply to %s: %w: file %q: mode %v", c.ID, ErrInvalid, f.Name, f.Mode)
		}
		if f.UID < 0 || f.GID < 0 || f.UID > 1<<31-2 || f.GID > 1<<31-2 {
			return fmt.Errorf("tmpfs: apply to %s: %w: file %q: owner %d:%d", c.ID, ErrInvalid, f.Name, f.UID, f.GID)
		}
		req.Files = append(req.Files, wireFile{
			Secret: f.Secret, Version: f.Version, Name: f.Name,
			Mode: uint32(f.Mode.Perm()), UID: uint32(f.UID), GID: uint32(f.GID), Value: f.Value,
		})
	}
	if err := validateRequest(req); err != nil {
		return fmt.Errorf("tmpfs: apply to %s: %w", c.ID, err)
	}
	frame, err := encodeRequest(req)
	req.Files = nil
	if err != nil {
		return fmt.Errorf("tmpfs: apply to %s: %w: %w", c.ID, ErrInvalid, err)
	}
	resp, err := d.roundTrip(ctx, req.ID, frame)
	clear(frame)
	if err != nil {
		return fmt.Errorf("tmpfs: apply to %s: %w", c.ID, err)
	}
	return d.result(c, resp)
}

func (d *Deliverer) result(c container.Info, r *response) error {
	log := d.log.With("container", c.ID, "name", c.Name)
	if r.Flags&flagNoSwapFallback != 0 {
		log.Warn("tmpfs mounted WITHOUT noswap: the kernel does not support it; safe only while swap stays off", "dir", d.cfg.Dir)
	}
	if r.Flags&flagManifestCorrupt != 0 {
		log.Warn("manifest in the container was unreadable or tampered with; rebuilt it", "dir", d.cfg.Dir)
	}
	var sentinel error
	switch r.Code {
	case codeOK:
		log.Debug("applied", "written", r.Written, "removed", r.Removed,
			"mounted", r.Flags&flagMounted != 0, "reused", r.Flags&flagReused != 0)
		return nil
	case codeGone:
		sentinel = ErrContainerGone
	case codeNoSwap:
		sentinel = deliver.ErrNoSwapProtection
		log.Error("refusing to deliver: tmpfs cannot be protected from swap while swap is on", "dir", d.cfg.Dir, "reason", r.Message)
	case codeUnsafePath:
		sentinel = ErrUnsafePath
		log.Warn("refusing to deliver into an unsafe path", "dir", d.cfg.Dir, "reason", r.Message)
	case codeShared:
		sentinel = ErrSharedTmpfs
		log.Error("refusing to deliver into a tmpfs other containers or the host can read", "dir", d.cfg.Dir, "reason", r.Message)
	case codeInvalid:
		sentinel = ErrInvalid
	default:
		return fmt.Errorf("tmpfs: apply to %s: %s", c.ID, r.Message)
	}
	return fmt.Errorf("tmpfs: apply to %s: %w: %s", c.ID, sentinel, r.Message)
}

// Release implements deliver.Deliverer. The container stopped: its mount
// namespace, and the tmpfs in it, are gone with it, and the Deliverer keeps
// no per-container state, so there is nothing to undo.
func (d *Deliverer) Release(_ context.Context, c container.Info) error {
	d.log.Debug("released", "container", c.ID)
	return nil
}

// roundTrip sends one request frame and waits for its response.
func (d *Deliverer) roundTrip(ctx context.Context, id uint64, frame []byte) (*response, error) {
	h, err := d.helper()
	if err != nil {
		return nil, err
	}
	ch := h.register(id)
	if err := h.write(frame); err != nil {
		h.unregister(id)
		return nil, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-h.dead:
		return nil, fmt.Errorf("%w: %w", ErrHelper, h.cause())
	case <-ctx.Done():
		h.unregister(id)
		return nil, ctx.Err()
	}
}

// helper returns the running helper, starting one if needed.
func (d *Deliverer) helper() (*helperProc, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrClosed
	}
	if d.h != nil {
		select {
		case <-d.h.dead:
			d.log.Warn("delivery helper died; restarting it", "err", d.h.cause())
			go d.h.stop() // close its socket and reap it
			d.h = nil
		default:
			return d.h, nil
		}
	}
	h, err := startHelper(d.cfg.Exe)
	if err != nil {
		return nil, fmt.Errorf("%w: start %s: %w", ErrHelper, d.cfg.Exe, err)
	}
	d.h = h
	return h, nil
}

// helperProc is one running helper and the requests waiting on it.
type helperProc struct {
	conn *os.File
	wmu  sync.Mutex

	mu      sync.Mutex
	pending map[uint64]chan *response
	err     error
	dead    chan struct{} // closed when the helper is unusable
	once    sync.Once
	exited  chan struct{} // closed when the process has been reaped
	proc    *os.Process
}

func startHelper(exe string) (*helperProc, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	// Our end non-blocking, so the runtime poller serves it and Close
	// interrupts a pending read; the helper's end (a separate open file
	// description) stays blocking.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	local := os.NewFile(uintptr(fds[0]), "coffer-deliver")
	remote := os.NewFile(uintptr(fds[1]), "coffer-deliver-helper")
	h := &helperProc{
		conn:    local,
		pending: map[uint64]chan *response{},
		dead:    make(chan struct{}),
		exited:  make(chan struct{}),
	}

	cmd := exec.Command(exe, helperArg)
	cmd.Args[0] = "coffer-deliver-helper"
	cmd.Env = []string{helperEnv + "=1"}
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = []*os.File{remote}
	// The helper dies with the thread that started it: keep that thread
	// alive (and locked) for as long as the helper runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(h.exited)
			return
		}
		started <- nil
		err := cmd.Wait()
		close(h.exited)
		h.fail(fmt.Errorf("helper exited: %v", err))
	}()
	err = <-started
	remote.Close()
	if err != nil {
		local.Close()
		return nil, err
	}
	h.proc = cmd.Process

	// The helper's first frame says it runs: a binary that does not call
	// Init would never send it.
	hello := make(chan error, 1)
	go func() {
		payload, err := readFrame(local)
		if err == nil {
			_, err = decodeResponse(payload)
		}
		hello <- err
	}()
	select {
	case err = <-hello:
	case <-time.After(helperStartTimeout):
		err = fmt.Errorf("no answer within %v: does the binary call tmpfs.Init first in main?", helperStartTimeout)
	}
	if err != nil {
		h.fail(err)
		h.stop()
		return nil, err
	}
	go h.readLoop()
	return h, nil
}

func (h *helperProc) readLoop() {
	for {
		payload, err := readFrame(h.conn)
		if err != nil {
			h.fail(fmt.Errorf("read: %w", err))
			return
		}
		r, err := decodeResponse(payload)
		if err != nil {
			h.fail(err)
			h.stop()
			return
		}
		h.mu.Lock()
		ch := h.pending[r.ID]
		delete(h.pending, r.ID)
		h.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

func (h *helperProc) register(id uint64) chan *response {
	ch := make(chan *response, 1)
	h.mu.Lock()
	h.pending[id] = ch
	h.mu.Unlock()
	return ch
}

func (h *helperProc) unregister(id uint64) {
	h.mu.Lock()
	delete(h.pending, id)
	h.mu.Unlock()
}

func (h *helperProc) write(frame []byte) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if err := writeFull(h.conn, frame); err != nil {
		h.fail(fmt.Errorf("write: %w", err))
		return fmt.Errorf("%w: %w", ErrHelper, err)
	}
	return nil
}

// fail marks the helper dead with its first cause.
func (h *helperProc) fail(err error) {
	h.once.Do(func() {
		h.mu.Lock()
		h.err = err
		h.mu.Unlock()
		close(h.dead)
	})
}

func (h *helperProc) cause() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil {
		return errors.New("unknown")
	}
	return h.err
}

// stop closes the socket (the helper exits on EOF), kills the helper if it
// lingers, and waits for it.
func (h *helperProc) stop() {
	h.fail(errors.New("stopped"))
	h.conn.Close()
	select {
	case <-h.exited:
	case <-time.After(5 * time.Second):
		if h.proc != nil {
			_ = h.proc.Kill()
		}
		<-h.exited
	}
}
