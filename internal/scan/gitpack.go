package scan

import (
	"bytes"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"github.com/klauspost/compress/zlib"
	"regexp"
	"strconv"
)

// Git keeps every committed version of every file, compressed: a secret
// removed from the working tree still sits in .git/objects. Packs
// (.git/objects/pack/*.pack) are opened like archives, one member per
// object (its ID, or "delta@OFFSET" for a delta, whose inserted text is
// scanned as is); loose objects are inflated and scanned under their own
// name.

// looseObject matches the path of a loose git object.
var looseObject = regexp.MustCompile(`(?:^|/)\.git/objects/[0-9a-f]{2}/[0-9a-f]{38}$`)

func isGitPack(data []byte) bool {
	if len(data) < 12 || string(data[:4]) != "PACK" {
		return false
	}
	v := binary.BigEndian.Uint32(data[4:])
	return v == 2 || v == 3
}

// isZlib reports a zlib header (RFC 1950): deflate, and a valid check.
func isZlib(data []byte) bool {
	return len(data) >= 2 && data[0]&0x0f == 8 && (uint16(data[0])<<8|uint16(data[1]))%31 == 0
}

var gitTypes = map[byte]string{1: "commit", 2: "tree", 3: "blob", 4: "tag"}

// gitPack scans the objects of a pack file.
func (r *run) gitPack(d *detector, layer *LayerRef, source, p string, data []byte, depth int, budget *int64) {
	if depth >= r.s.cfg.MaxArchiveDepth {
		r.skip(layer, p, SkipTooDeep, int64(len(data)))
		r.detect(d, layer, source, p, data)
		return
	}
	count := binary.BigEndian.Uint32(data[8:])
	rd := bytes.NewReader(data[12:])
	for range count {
		if r.ctx.Err() != nil {
			return
		}
		off := len(data) - rd.Len()
		typ, size, err := packObjectHeader(rd)
		if err != nil {
			r.skip(layer, p, SkipCorrupt, int64(len(data)))
			return
		}
		name := ""
		switch typ {
		case 6: // ofs_delta: a varint offset back to the base
			for {
				c, err := rd.ReadByte()
				if err != nil {
					r.skip(layer, p, SkipCorrupt, int64(len(data)))
					return
				}
				if c&0x80 == 0 {
					break
				}
			}
			name = "delta@" + strconv.Itoa(off)
		case 7: // ref_delta: the base's 20-byte ID
			if _, err := rd.Seek(20, 1); err != nil {
				r.skip(layer, p, SkipCorrupt, int64(len(data)))
				return
			}
			name = "delta@" + strconv.Itoa(off)
		case 1, 2, 3, 4:
		default:
			r.skip(layer, p, SkipCorrupt, int64(len(data)))
			return
		}
		zr, err := zlib.NewReader(rd)
		if err != nil {
			r.skip(layer, p, SkipCorrupt, int64(len(data)))
			return
		}
		mp := fmt.Sprintf("%s!/object@%d", p, off)
		buf := r.expand(layer, mp, zr, size, 0, budget)
		_ = zr.Close()
		if buf == nil {
			return // listed; the stream position is lost
		}
		obj := *buf
		if int64(len(obj)) != size {
			putBuf(buf)
			r.skip(layer, mp, SkipCorrupt, int64(len(obj)))
			return
		}
		if name == "" {
			h := sha1.New()
			fmt.Fprintf(h, "%s %d\x00", gitTypes[byte(typ)], size)
			h.Write(obj)
			name = hex.EncodeToString(h.Sum(nil))
		}
		if typ != 2 { // trees hold names and IDs, no content
			r.content(d, layer, source, member(p, name), obj, depth+1, budget)
		}
		putBuf(buf)
	}
}

// packObjectHeader reads an object's type and inflated size.
func packObjectHeader(rd *bytes.Reader) (int, int64, error) {
	c, err := rd.ReadByte()
	if err != nil {
		return 0, 0, err
	}
	typ := int(c>>4) & 7
	size := int64(c & 0x0f)
	for shift := 4; c&0x80 != 0; shift += 7 {
		if shift > 56 {
			return 0, 0, ErrCorrupt
		}
		if c, err = rd.ReadByte(); err != nil {
			return 0, 0, err
		}
		size |= int64(c&0x7f) << shift
	}
	return typ, size, nil
}

// looseGitObject inflates a loose object and scans its content (after the
// "blob 123\0" header) under the object's own path.
func (r *run) looseGitObject(d *detector, layer *LayerRef, source, p string, data []byte, budget *int64) bool {
	zr, err := zlib.NewReader(bytes.NewReader(data))
	if err != nil {
		return false
	}
	defer zr.Close()
	r.archives.Add(1)
	buf := r.expand(layer, p, zr, 4*int64(len(data)), int64(len(data)), budget)
	if buf == nil {
		return true
	}
	defer putBuf(buf)
	obj := *buf
	if i := bytes.IndexByte(obj[:min(len(obj), 32)], 0); i >= 0 {
		if bytes.HasPrefix(obj, []byte("tree ")) {
			return true
		}
		obj = obj[i+1:]
	}
	r.detect(d, layer, source, p, obj)
	return true
}
