package scan

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// ScanDir scans every regular file under root (a build context, an unpacked
// image). Symbolic links are not followed, so link loops cannot trap it.
func (s *Scanner) ScanDir(ctx context.Context, root string) (*Report, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, fmt.Errorf("scan dir: %w", err)
	}
	st, err := os.Stat(real)
	if err != nil {
		return nil, fmt.Errorf("scan dir: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("scan dir: %s is not a directory", root)
	}
	r := s.newRun(ctx)
	stop := make(chan struct{})
	go r.progress(stop)
	defer close(stop)

	walkErr := filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			r.warn("%v", err)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(real, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		return r.readFile(p, rel)
	})
	rep := r.finish(root, "dir")
	if walkErr != nil {
		return nil, fmt.Errorf("scan dir: %w", walkErr)
	}
	for _, fs := range [][]Finding{rep.Findings, rep.Low} {
		for i := range fs {
			fs[i].Source = "file"
		}
	}
	return rep, nil
}

func (r *run) readFile(p, rel string) error {
	f, err := os.Open(p)
	if err != nil {
		r.warn("%v", err)
		return nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil
	}
	r.bytes.Add(st.Size())
	if st.Size() > r.s.cfg.MaxFileSize {
		r.files.Add(1)
		r.skip(nil, rel, SkipTooLarge, st.Size())
		return nil
	}
	buf := getBuf(int(st.Size()))
	if _, err := io.ReadFull(f, *buf); err != nil {
		putBuf(buf)
		r.warn("%s: %v", rel, err)
		return nil
	}
	return r.submit(job{source: "file", path: rel, data: *buf, buf: buf})
}
