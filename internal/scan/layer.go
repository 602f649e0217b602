package scan

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"strings"
)

// layerInfo is what later layers need to know about a layer: which paths it
// adds (overwriting lower layers) and which it deletes.
type layerInfo struct {
	files     map[string]struct{} // every non-directory entry
	whiteouts []string            // paths deleted from lower layers
	opaque    []string            // directories whose lower contents are hidden
}

// deletes reports whether this layer deletes p of a lower layer.
func (li *layerInfo) deletes(p string) bool {
	for _, w := range li.whiteouts {
		if p == w || strings.HasPrefix(p, w+"/") {
			return true
		}
	}
	for _, d := range li.opaque {
		if d == "" || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// hashingReader hashes everything read through it and counts the bytes.
type hashingReader struct {
	r     io.Reader
	h     hash.Hash
	n     int64
	limit int64
}

func (hr *hashingReader) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	hr.h.Write(p[:n])
	hr.n += int64(n)
	if hr.n > hr.limit {
		return n, ErrTooLarge
	}
	return n, err
}

// readLayer streams one layer's tar, hands its regular files to the workers,
// and checks its content against diffID (hex of the sha256 of the tar; empty
// to skip the check).
func (r *run) readLayer(ref *LayerRef, rc io.Reader, diffID string) (*layerInfo, error) {
	info := &layerInfo{files: map[string]struct{}{}}
	hr := &hashingReader{r: rc, h: sha256.New(), limit: r.s.cfg.MaxLayerSize}
	tr := tar.NewReader(hr)
	var last int64
	account := func() {
		r.bytes.Add(hr.n - last)
		last = hr.n
	}
	defer account()
	for {
		if err := r.ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, tar.ErrInsecurePath) {
			err = nil // reported below; nothing is ever written
		}
		if err != nil {
			return nil, layerErr(ref, err)
		}
		name, escaped := cleanPath(hdr.Name)
		if escaped {
			r.warn("layer %d: entry %q leaves the root; reported as %q", ref.Index, hdr.Name, name)
		}
		dir, base := path.Split(name)
		dir = strings.TrimSuffix(dir, "/")
		if base == ".wh..wh..opq" {
			info.opaque = append(info.opaque, dir)
			continue
		}
		if strings.HasPrefix(base, ".wh.") {
			info.whiteouts = append(info.whiteouts, path.Join(dir, base[len(".wh."):]))
			continue
		}
		if hdr.Typeflag == tar.TypeDir {
			continue
		}
		info.files[name] = struct{}{}
		if hdr.Typeflag != tar.TypeReg { // archive/tar reads old TypeRegA entries as TypeReg
			continue // links, devices: no content of their own
		}
		if hdr.Size > r.s.cfg.MaxFileSize {
			r.files.Add(1)
			r.skip(ref, name, SkipTooLarge, hdr.Size)
			continue
		}
		buf := getBuf(int(hdr.Size))
		if _, err := io.ReadFull(tr, *buf); err != nil {
			putBuf(buf)
			return nil, layerErr(ref, err)
		}
		account()
		if err := r.submit(job{layer: ref, source: "layer", path: name, data: *buf, buf: buf}); err != nil {
			return nil, err
		}
	}
	// The tar may end before the stream does (padding): hash all of it.
	if _, err := io.Copy(io.Discard, hr); err != nil {
		return nil, layerErr(ref, err)
	}
	if diffID != "" {
		if got := hex.EncodeToString(hr.h.Sum(nil)); got != diffID {
			return nil, fmt.Errorf("layer %d: %w: content is sha256:%s, config says sha256:%s",
				ref.Index, ErrDigestMismatch, got, diffID)
		}
	}
	return info, nil
}

func layerErr(ref *LayerRef, err error) error {
	switch {
	case errors.Is(err, ErrTooLarge), errors.Is(err, ErrDigestMismatch):
		return fmt.Errorf("layer %d: %w", ref.Index, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("layer %d: %w: truncated tar stream", ref.Index, ErrCorrupt)
	}
	return fmt.Errorf("layer %d: %w: %w", ref.Index, ErrCorrupt, err)
}

// settle marks findings whose file a later layer deleted or replaced.
func settle(fs []Finding, infos []*layerInfo) {
	for i := range fs {
		f := &fs[i]
		if f.Layer == nil {
			continue
		}
		top, _, _ := strings.Cut(f.Path, "!/")
		for j := f.Layer.Index + 1; j < len(infos); j++ {
			li := infos[j]
			if li == nil {
				continue
			}
			if li.deletes(top) {
				f.DeletedIn = j
				break
			}
			if _, ok := li.files[top]; ok {
				f.OverwrittenIn = j
				break
			}
		}
	}
}
