package execwrap

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// WaitFiles waits until every file of s is a regular file in s.Dir, for at
// most s.Timeout. Without s.Wait it only checks once. It looks at each
// path again on every try (a tmpfs the agent mounts after the container
// started hides the directory the wrapper might have opened).
func WaitFiles(ctx context.Context, s *Spec) error {
	if err := s.normalize(); err != nil {
		return err
	}
	return waitFiles(ctx, s)
}

func waitFiles(ctx context.Context, s *Spec) error {
	files := s.files()
	absent := func() (names []string, err error) {
		for _, f := range files {
			p := filepath.Join(s.Dir, f)
			fi, err := os.Stat(p)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				names = append(names, p)
			case err != nil:
				return nil, missing(p, err)
			case !fi.Mode().IsRegular():
				return nil, fmt.Errorf("%w: %s is not a regular file", ErrMissing, p)
			}
		}
		return names, nil
	}
	gone, err := absent()
	if err != nil || len(gone) == 0 {
		return err
	}
	if !s.Wait {
		return fmt.Errorf("%w: %s not there (not delivered: does a binding select this container? --wait waits for delivery)",
			ErrMissing, strings.Join(gone, ", "))
	}
	s.Logger.Info("waiting for secret files", "files", strings.Join(gone, ", "), "timeout", s.Timeout)
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	t := time.NewTicker(min(s.Poll, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if gone, err = absent(); err == nil && len(gone) == 0 {
				return nil
			}
			if err != nil {
				return err
			}
			return fmt.Errorf("%w: after %s, still missing: %s (is the agent running, and does a binding select this container?)",
				ErrTimeout, s.Timeout, strings.Join(gone, ", "))
		case <-t.C:
			if gone, err = absent(); err != nil || len(gone) == 0 {
				return err
			}
		}
	}
}

// fileState is what changes when the agent replaces a file (it renames a
// new inode over the name).
type fileState struct {
	dev, ino uint64
	size     int64
	mtime    int64
	present  bool
}

// stateOf returns the state of every file of s, by file name.
func stateOf(s *Spec) map[string]fileState {
	out := map[string]fileState{}
	for _, f := range s.files() {
		fi, err := os.Stat(filepath.Join(s.Dir, f))
		if err != nil {
			out[f] = fileState{}
			continue
		}
		st := fileState{size: fi.Size(), mtime: fi.ModTime().UnixNano(), present: true}
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			st.dev, st.ino = uint64(sys.Dev), uint64(sys.Ino)
		}
		out[f] = st
	}
	return out
}
