package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// watcher follows the secrets directory of every container with inotify,
// through /proc/<pid>/root (the container's own mount namespace), and
// timestamps the first moment each container's file satisfies the current
// expectation.
type watcher struct {
	f    *os.File
	wds  map[int32]int
	ctrs []*realContainer
	cur  atomic.Pointer[fileExpect]
	done chan struct{}
}

type fileExpect struct {
	*expectation
	check func(b []byte, err error) bool
}

func newWatcher(ctrs []*realContainer) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	w := &watcher{f: os.NewFile(uintptr(fd), "inotify"), wds: map[int32]int{}, ctrs: ctrs, done: make(chan struct{})}
	for i, c := range ctrs {
		dir := fmt.Sprintf("/proc/%d/root/run/secrets", c.pid)
		wd, err := unix.InotifyAddWatch(fd, dir, unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE|unix.IN_CREATE|unix.IN_DELETE|unix.IN_MOVED_FROM)
		if err != nil {
			w.f.Close()
			return nil, fmt.Errorf("inotify %s: %w", dir, err)
		}
		w.wds[int32(wd)] = i
	}
	go w.run()
	return w, nil
}

func (w *watcher) close() {
	w.f.Close()
	<-w.done
}

func (w *watcher) run() {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return
		}
		now := time.Now()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			name := string(bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+nameLen], "\x00"))
			off += unix.SizeofInotifyEvent + nameLen
			if i, ok := w.wds[wd]; ok && name == tokenFile {
				w.look(i, now)
			}
		}
	}
}

// look checks container i's file against the expectation.
func (w *watcher) look(i int, now time.Time) {
	e := w.cur.Load()
	if e == nil || e.at[i].Load() != 0 {
		return
	}
	b, err := os.ReadFile(w.ctrs[i].file())
	ok := e.check(b, err)
	clear(b)
	if ok {
		e.mark(i, now)
	}
}

// expect starts a round: every container must satisfy check.
func (w *watcher) expect(check func([]byte, error) bool) *fileExpect {
	e := &fileExpect{expectation: newExpectation(0, len(w.ctrs)), check: check}
	w.cur.Store(e)
	return e
}

// wait waits for the round, looking at every file once a second in case an
// event was missed (such a container is timed at that look, later than
// the change).
func (e *fileExpect) wait(ctx context.Context, w *watcher, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := e.expectation.wait(ctx, time.Second)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if time.Now().After(deadline) {
			return err
		}
		for i := range w.ctrs {
			w.look(i, time.Now())
		}
	}
}
