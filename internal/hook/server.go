package hook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"coffer/internal/container"
	"coffer/internal/container/containerd"
)

// Agent is what the server needs of the agent (*agent.Agent): its prestart
// path, the same the NRI plugin uses.
type Agent interface {
	Prepare(info container.Info) bool
	Holds(id string) bool
	StartNow(ctx context.Context, info container.Info, limit time.Duration) (ready bool)
	Forget(ctx context.Context, id string)
}

// Runtime reads a container being created from the CRI
// (*containerd.Runtime).
type Runtime interface {
	Creating(ctx context.Context, id string) (containerd.Creating, error)
}

// Config configures a Server.
type Config struct {
	Socket  string // default DefaultSocket
	Agent   Agent
	Runtime Runtime
	Gate    *Gate // the agent's Deliverer
	Logger  *slog.Logger
	// Wait bounds the wait for the server's answer to the container's
	// report (default 2s); Limit bounds the write (default 1.5s). Their
	// sum stays below the hook's DefaultTimeout.
	Wait, Limit time.Duration
	// MaxConcurrent bounds the requests served at once (default 64); more
	// are answered "busy" at once.
	MaxConcurrent int
}

// Server is the agent's end of the hook's socket.
type Server struct {
	cfg  Config
	log  *slog.Logger
	ln   *net.UnixListener
	sem  chan struct{}
	euid int

	mu    sync.Mutex
	busy  map[string]chan struct{} // one request per container at a time
	runMu sync.Mutex
	run   context.Context
}

// New checks cfg and listens on its socket: mode 0600, in a directory that
// only the agent's user may write (created 0700 if missing). It refuses a
// socket path that is not a socket, one owned by another user, one where
// another agent answers, and a directory others could write into.
func New(cfg Config) (*Server, error) {
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	if cfg.Agent == nil || cfg.Runtime == nil || cfg.Gate == nil {
		return nil, errors.New("hook: Agent, Runtime and Gate are required")
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 2 * time.Second
	}
	if cfg.Limit <= 0 {
		cfg.Limit = 1500 * time.Millisecond
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 64
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := listen(cfg.Socket)
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, log: log.With("component", "hook"), ln: ln, sem: make(chan struct{}, cfg.MaxConcurrent),
		euid: os.Geteuid(), busy: map[string]chan struct{}{}}, nil
}

// Socket is the path the server listens on.
func (s *Server) Socket() string { return s.cfg.Socket }

// listen makes the socket, refusing paths someone else controls.
func listen(path string) (*net.UnixListener, error) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return nil, fmt.Errorf("hook socket %q: want a clean absolute path", path)
	}
	euid := os.Geteuid()
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("hook socket directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("hook socket directory: %w", err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return nil, fmt.Errorf("hook socket directory %s is not a directory (a symlink?): refusing", dir)
	case int(st.Uid) != euid:
		return nil, fmt.Errorf("hook socket directory %s is owned by uid %d, not %d: refusing", dir, st.Uid, euid)
	case fi.Mode().Perm()&0o022 != 0:
		return nil, fmt.Errorf("hook socket directory %s is writable by group or others (%v): refusing", dir, fi.Mode().Perm())
	}
	if fi, err := os.Lstat(path); err == nil {
		st := fi.Sys().(*syscall.Stat_t)
		switch {
		case fi.Mode().Type() != fs.ModeSocket:
			return nil, fmt.Errorf("hook socket %s exists and is not a socket: refusing to replace it", path)
		case int(st.Uid) != euid:
			return nil, fmt.Errorf("hook socket %s is owned by uid %d, not %d: refusing", path, st.Uid, euid)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("hook socket %s: another agent listens there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("hook socket %s: remove the stale socket: %w", path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("hook socket %s: %w", path, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("hook socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("hook socket %s: %w", path, err)
	}
	return ln, nil
}

// Serve answers hooks until ctx ends, then closes the socket (removing
// it) and waits for the requests being served.
func (s *Server) Serve(ctx context.Context) error {
	s.runMu.Lock()
	s.run = ctx
	s.runMu.Unlock()
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	s.log.Info("OCI hook socket listening", "socket", s.cfg.Socket)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.ln.Close()
			return fmt.Errorf("hook socket: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, conn)
		}()
	}
}

// Close closes the socket (Serve returns).
func (s *Server) Close() error { return s.ln.Close() }

func (s *Server) serveConn(ctx context.Context, conn *net.UnixConn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(s.cfg.Wait + s.cfg.Limit + 5*time.Second))
	reply := s.answer(ctx, conn)
	reply.V = wireVersion
	b, _ := json.Marshal(reply)
	_, _ = conn.Write(b)
	// Read what an oversized request still sends (bounded, within the
	// deadline), so closing does not reset the connection before the
	// caller has read the answer.
	_ = conn.CloseWrite()
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, 4*maxRequestBytes))
}

// peerUID is the uid of the process at the other end of conn.
func peerUID(conn *net.UnixConn) (int, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return -1, err
	}
	if cerr != nil {
		return -1, cerr
	}
	return int(cred.Uid), nil
}

// answer reads one request and decides.
func (s *Server) answer(ctx context.Context, conn *net.UnixConn) Reply {
	uid, err := peerUID(conn)
	if err != nil || (uid != 0 && uid != s.euid) {
		s.log.Warn("hook socket: refused a caller that is not root", "uid", uid, "err", err)
		return Reply{Start: true, Message: "refused: the caller is not root"}
	}
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		return Reply{Start: true, Message: "the agent is busy (too many hooks at once); files follow after start"}
	}
	var req request
	if err := readJSON(conn, maxRequestBytes, &req); err != nil {
		return Reply{Start: true, Message: fmt.Sprintf("bad request: %v", err)}
	}
	if req.V != wireVersion {
		return Reply{Start: true, Message: fmt.Sprintf("bad request: protocol version %d, want %d (the hook and the agent are different versions)", req.V, wireVersion)}
	}
	if err := req.State.Validate(); err != nil {
		return Reply{Start: !req.State.Required(), Message: err.Error()}
	}
	st := req.State
	if st.Sandbox() {
		return Reply{Start: true, Ready: true, Message: "a pod sandbox gets no files"}
	}
	unlock, ok := s.lock(ctx, st.ID)
	if !ok {
		return Reply{Start: !st.Required(), Message: "another hook for this container is still being served"}
	}
	defer unlock()
	return s.prestart(st)
}

// lock serializes the requests for one container (a second one, forged
// or repeated, waits for the first).
func (s *Server) lock(ctx context.Context, id string) (func(), bool) {
	deadline := time.After(s.cfg.Wait + s.cfg.Limit)
	for {
		s.mu.Lock()
		ch, held := s.busy[id]
		if !held {
			ch = make(chan struct{})
			s.busy[id] = ch
			s.mu.Unlock()
			return func() {
				s.mu.Lock()
				delete(s.busy, id)
				s.mu.Unlock()
				close(ch)
			}, true
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			return nil, false
		case <-ctx.Done():
			return nil, false
		}
	}
}

// prestart identifies the container from the runtime and the kernel, then
// runs the agent's prestart path for it.
func (s *Server) prestart(st State) Reply {
	s.runMu.Lock()
	runCtx := s.run
	s.runMu.Unlock()
	if runCtx == nil {
		runCtx = context.Background()
	}
	ctx, cancel := context.WithTimeout(runCtx, s.cfg.Wait+s.cfg.Limit)
	defer cancel()
	log := s.log.With("id", clip(st.ID), "pid", st.PID)

	refuse := func(required bool, why string, err error) Reply {
		msg := why
		switch {
		case why == "":
			msg = err.Error()
		case err != nil:
			msg += ": " + err.Error()
		}
		log.Warn("hook: no delivery before the container's start", "why", msg, "required", required)
		if required {
			return Reply{Required: true, Message: msg + fmt.Sprintf(" (it requires its secrets, %s=true: the kubelet retries; on Docker, start it again)", RequireAnnotation)}
		}
		return Reply{Start: true, Message: msg + "; files follow after start"}
	}

	c, err := s.cfg.Runtime.Creating(ctx, st.ID)
	if err != nil {
		// Nothing is known of the pod: the hook's own annotation decides.
		return refuse(st.Required(), "container not identified by the runtime", err)
	}
	required := c.PodAnnotations[RequireAnnotation] == "true"
	if v, ok := st.Annotations[AnnotationSandboxID]; ok && v != c.SandboxID {
		return refuse(required, "", fmt.Errorf("%w: the state's %s %q is not the container's pod sandbox %s", ErrRefused, AnnotationSandboxID, clip(v), c.SandboxID))
	}
	if v, ok := st.Annotations[AnnotationContainerName]; ok && !nameMatches(c.Info.Name, v) {
		return refuse(required, "", fmt.Errorf("%w: the state's %s %q is not the container's name", ErrRefused, AnnotationContainerName, clip(v)))
	}
	p, err := pinHeld(st.PID, st.ID)
	if err != nil {
		return refuse(required, "", fmt.Errorf("%w: %w", ErrRefused, err))
	}
	defer p.close()

	info := c.Info
	if !s.cfg.Agent.Prepare(info) {
		return Reply{Start: true, Ready: true, Message: "not served by this agent"}
	}
	// The server's answer to the report: a bounded wait. The pid is
	// recorded (StartNow) only once it is there (see agent.Holds).
	start := time.Now()
	for !s.cfg.Agent.Holds(info.ID) {
		if time.Since(start) > s.cfg.Wait || ctx.Err() != nil {
			if required {
				s.cfg.Agent.Forget(context.WithoutCancel(ctx), info.ID)
			}
			return refuse(required, "the agent does not hold the container's secrets yet (the server is unreachable or has not answered)", nil)
		}
		time.Sleep(5 * time.Millisecond)
	}
	info.PID = st.PID
	if err := s.cfg.Gate.enter(info.ID, p.pid, p.root, p.preRoot); err != nil {
		return refuse(required, "", err)
	}
	ready := s.cfg.Agent.StartNow(runCtx, info, s.cfg.Limit)
	s.cfg.Gate.leave(info.ID)
	if !p.alive() {
		ready = false
	}
	log.Debug("hook served", "name", info.Name, "ready", ready, "took", time.Since(start))
	if !ready {
		return refuse(required, "the container's files could not be written before its start", nil)
	}
	return Reply{Start: true, Ready: true, Required: required}
}

// nameMatches compares the CRI's container name with the state's
// container-name annotation (Info.Name is namespace/pod/container).
func nameMatches(infoName, annotated string) bool {
	return infoName == annotated || len(infoName) > len(annotated) && infoName[len(infoName)-len(annotated)-1:] == "/"+annotated
}
