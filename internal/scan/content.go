package scan

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"errors"
	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"io"
	"path"
	"strings"
	"sync"
)

// kind is what a file's first bytes say it is.
type kind int

const (
	kindPlain kind = iota
	kindGzip
	kindZip
	kindTar
	kindUnsupported // xz, bzip2, zstd, 7z, rar: scanned raw, listed
	kindMedia       // images, audio, video, fonts: listed, not scanned
)

func sniff(data []byte) kind {
	switch {
	case len(data) >= 3 && data[0] == 0x1f && data[1] == 0x8b && data[2] == 8:
		return kindGzip
	case len(data) >= 4 && string(data[:4]) == "PK\x03\x04":
		return kindZip
	case len(data) >= 262 && string(data[257:262]) == "ustar":
		return kindTar
	case len(data) >= 6 && string(data[:6]) == "\xfd7zXZ\x00",
		len(data) >= 4 && string(data[:4]) == "\x28\xb5\x2f\xfd",
		len(data) >= 3 && string(data[:3]) == "BZh",
		len(data) >= 6 && string(data[:6]) == "7z\xbc\xaf\x27\x1c",
		len(data) >= 4 && string(data[:4]) == "Rar!":
		return kindUnsupported
	case isMedia(data):
		return kindMedia
	}
	return kindPlain
}

// isMedia recognises images, audio, video and fonts by their magic bytes:
// compressed pixels and samples hold no text secrets, and they are a large
// part of many images. Metadata chunks aside, what such a file holds is
// not text; the file is listed as skipped.
func isMedia(b []byte) bool {
	has := func(off int, magic string) bool {
		return len(b) >= off+len(magic) && string(b[off:off+len(magic)]) == magic
	}
	switch {
	case has(0, "\x89PNG\r\n\x1a\n"), has(0, "\xff\xd8\xff"), has(0, "GIF87a"), has(0, "GIF89a"),
		has(0, "RIFF") && (has(8, "WEBP") || has(8, "WAVE") || has(8, "AVI ")),
		has(0, "wOFF"), has(0, "wOF2"), has(0, "OTTO"), has(0, "ID3"), has(0, "OggS"), has(0, "fLaC"),
		has(4, "ftyp"), has(0, "\x1aE\xdf\xa3"), has(0, "II*\x00"), has(0, "MM\x00*"):
		return true
	}
	return false
}

// isBinary reports whether data looks like a binary file: a NUL byte in its
// first 8 KiB (as git and grep decide).
func isBinary(data []byte) bool {
	return bytes.IndexByte(data[:min(len(data), 8<<10)], 0) >= 0
}

// member joins an archive's path and a member name: "app.jar!/a/b.properties".
func member(archive, name string) string {
	clean, _ := cleanPath(name)
	return archive + "!/" + clean
}

// cleanPath turns a tar or zip entry name into a relative slash path without
// "." or ".." elements. escaped reports a name that tried to leave the root.
func cleanPath(name string) (clean string, escaped bool) {
	name = strings.ReplaceAll(name, "\\", "/")
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			escaped = true
			break
		}
	}
	return strings.TrimPrefix(path.Clean("/"+name), "/"), escaped
}

// content scans one file's bytes, opening archives and gzip files. depth is
// the archive nesting of the file itself (0: a file in a layer); budget is
// what may still be decompressed for the top-level file.
func (r *run) content(d *detector, layer *LayerRef, source, p string, data []byte, depth int, budget *int64) {
	if r.ctx.Err() != nil {
		return
	}
	r.files.Add(1)
	if isGitPack(data) {
		r.archives.Add(1)
		r.gitPack(d, layer, source, p, data, depth, budget)
		return
	}
	if isZlib(data) && looseObject.MatchString(p) && r.looseGitObject(d, layer, source, p, data, budget) {
		return
	}
	switch sniff(data) {
	case kindGzip:
		r.archives.Add(1)
		r.gunzip(d, layer, source, p, data, depth, budget)
		return
	case kindZip, kindTar:
		if depth >= r.s.cfg.MaxArchiveDepth {
			r.skip(layer, p, SkipTooDeep, int64(len(data)))
			break // still scan the raw bytes: stored members are readable
		}
		r.archives.Add(1)
		if sniff(data) == kindZip {
			r.unzip(d, layer, source, p, data, depth, budget)
		} else {
			r.untar(d, layer, source, p, bytes.NewReader(data), depth, budget)
		}
		return
	case kindUnsupported:
		r.skip(layer, p, SkipUnsupported, int64(len(data)))
	case kindMedia:
		r.skip(layer, p, SkipMedia, int64(len(data)))
		return
	}
	r.detect(d, layer, source, p, data)
}

// detect runs the rules over a plain file.
func (r *run) detect(d *detector, layer *LayerRef, source, p string, data []byte) {
	r.scanned.Add(int64(len(data)))
	bin := isBinary(data)
	if bin {
		r.binary.Add(1)
	} else if classifyPath(p).docs {
		r.noteDocs(p, data)
	}
	r.report(layer, source, p, data, bin, d.find(p, data, bin))
}

// readLimited reads at most limit bytes from rd into a pooled buffer. It
// reports whether rd had more.
func readLimited(rd io.Reader, sizeHint, limit int64) (*[]byte, int, bool, error) {
	n := min(max(sizeHint+1, 4<<10), limit+1) // +1: room to see EOF without growing
	buf := getBuf(int(n))
	b := *buf
	got := 0
	for {
		if got == len(b) {
			if int64(got) > limit {
				return buf, got, true, nil
			}
			nb := getBuf(min(2*len(b), int(limit+1)))
			copy(*nb, b[:got])
			putBuf(buf)
			buf, b = nb, *nb
		}
		m, err := rd.Read(b[got:])
		got += m
		if errors.Is(err, io.EOF) {
			return buf, got, false, nil
		}
		if err != nil {
			return buf, got, false, err
		}
	}
}

// expand reads a decompressing reader under the file size limit and the
// archive budget; it lists the file as skipped and returns nil if it cannot.
func (r *run) expand(layer *LayerRef, p string, rd io.Reader, hint, packed int64, budget *int64) *[]byte {
	limit := min(r.s.cfg.MaxFileSize, *budget)
	buf, n, more, err := readLimited(rd, hint, limit)
	*budget -= int64(n)
	switch {
	case more && limit < r.s.cfg.MaxFileSize:
		r.skip(layer, p, SkipBomb, int64(n))
	case more && packed > 0 && int64(n)/packed > 100:
		r.skip(layer, p, SkipBomb, int64(n))
	case more:
		r.skip(layer, p, SkipTooLarge, int64(n))
	case err != nil:
		r.skip(layer, p, SkipCorrupt, int64(n))
	default:
		*buf = (*buf)[:n]
		return buf
	}
	putBuf(buf)
	return nil
}

func (r *run) gunzip(d *detector, layer *LayerRef, source, p string, data []byte, depth int, budget *int64) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		r.skip(layer, p, SkipCorrupt, int64(len(data)))
		r.detect(d, layer, source, p, data)
		return
	}
	buf := r.expand(layer, p, zr, 4*int64(len(data)), int64(len(data)), budget)
	if buf == nil {
		return
	}
	defer putBuf(buf)
	inner := *buf
	if sniff(inner) == kindTar {
		if depth >= r.s.cfg.MaxArchiveDepth {
			r.skip(layer, p, SkipTooDeep, int64(len(inner)))
			r.detect(d, layer, source, p, inner)
			return
		}
		r.untar(d, layer, source, p, bytes.NewReader(inner), depth, budget)
		return
	}
	// A single compressed file (rotated log): scan what it holds under its own name.
	r.detect(d, layer, source, p, inner)
}

func (r *run) untar(d *detector, layer *LayerRef, source, p string, rd io.Reader, depth int, budget *int64) {
	tr := tar.NewReader(rd)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if errors.Is(err, tar.ErrInsecurePath) {
			err = nil // names are labels here, nothing is written
		}
		if err != nil {
			r.skip(layer, p, SkipCorrupt, 0)
			return
		}
		if hdr.Typeflag != tar.TypeReg { // archive/tar reads old TypeRegA entries as TypeReg
			continue
		}
		mp := member(p, hdr.Name)
		if hdr.Size > r.s.cfg.MaxFileSize {
			r.skip(layer, mp, SkipTooLarge, hdr.Size)
			continue
		}
		buf := r.expand(layer, mp, tr, hdr.Size, 0, budget)
		if buf == nil {
			continue
		}
		r.content(d, layer, source, mp, *buf, depth+1, budget)
		putBuf(buf)
	}
}

func (r *run) unzip(d *detector, layer *LayerRef, source, p string, data []byte, depth int, budget *int64) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if errors.Is(err, zip.ErrInsecurePath) {
		err = nil // names are labels here, nothing is written
	}
	if err != nil {
		r.skip(layer, p, SkipCorrupt, int64(len(data)))
		r.detect(d, layer, source, p, data)
		return
	}
	zr.RegisterDecompressor(zip.Deflate, func(rd io.Reader) io.ReadCloser { return flate.NewReader(rd) })
	for _, f := range zr.File {
		if r.ctx.Err() != nil {
			return
		}
		if f.FileInfo().IsDir() {
			continue
		}
		mp := member(p, f.Name)
		if f.Flags&0x1 != 0 {
			r.skip(layer, mp, SkipEncrypted, int64(f.CompressedSize64))
			continue
		}
		if f.UncompressedSize64 > uint64(r.s.cfg.MaxFileSize) {
			reason := SkipTooLarge
			if f.CompressedSize64 > 0 && f.UncompressedSize64/f.CompressedSize64 > 100 {
				reason = SkipBomb
			}
			r.skip(layer, mp, reason, int64(min(f.UncompressedSize64, 1<<62)))
			continue
		}
		rc, err := f.Open()
		if err != nil {
			r.skip(layer, mp, SkipCorrupt, int64(f.CompressedSize64))
			continue
		}
		buf := r.expand(layer, mp, rc, int64(f.UncompressedSize64), int64(f.CompressedSize64), budget)
		_ = rc.Close()
		if buf == nil {
			continue
		}
		r.content(d, layer, source, mp, *buf, depth+1, budget)
		putBuf(buf)
	}
}

// Buffers come from pools of power-of-two size classes and are zeroed when
// returned: they held file contents, secrets among them.
var bufPools [40]sync.Pool

func sizeClass(n int) int {
	c := 12 // 4 KiB minimum
	for 1<<c < n {
		c++
	}
	return c
}

func getBuf(n int) *[]byte {
	c := sizeClass(n)
	if v := bufPools[c].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<c)
	return &b
}

// putBuf zeroes the buffer's used part (its length) and pools it.
func putBuf(b *[]byte) {
	clear(*b)
	*b = (*b)[:cap(*b)]
	if c := sizeClass(cap(*b)); 1<<c == cap(*b) {
		bufPools[c].Put(b)
	}
}
