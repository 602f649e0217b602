package tmpfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// The agent and its helper speak length-prefixed binary frames over a unix
// socketpair: a big-endian uint32 length, then the payload. Values travel as
// raw bytes, never as text, and both ends zero their buffers after use.

const (
	protoVersion = 1
	maxFrame     = 64 << 20 // bound on one frame, far above any tmpfs size cap
	maxFiles     = 4096
)

var errProtocol = errors.New("protocol error")

// wireFile is one file of a request.
type wireFile struct {
	Secret  string
	Version uint64
	Name    string
	Mode    uint32 // permission bits
	UID     uint32
	GID     uint32
	Value   []byte // aliases the frame buffer on the helper side
}

// request asks the helper to make dir in container ContainerID (init
// process PID) hold exactly Files.
type request struct {
	ID          uint64
	ContainerID string
	PID         uint32
	Dir         string
	SizeBytes   uint64
	Files       []wireFile
}

// Response codes; each maps to a sentinel error on the agent side.
const (
	codeOK uint8 = iota
	codeGone
	codeNoSwap
	codeUnsafePath
	codeInvalid
	codeFailed
	codeShared // the target is a tmpfs other namespaces see
)

// Response flags.
const (
	flagMounted         uint8 = 1 << iota // a new tmpfs was mounted
	flagReused                            // an existing tmpfs was used
	flagNoSwapFallback                    // mounted without noswap (kernel lacks it, swap off)
	flagManifestCorrupt                   // the manifest could not be read and was rebuilt
)

// response is the helper's answer to request ID. Message never holds a value.
type response struct {
	ID      uint64
	Code    uint8
	Flags   uint8
	Written uint16
	Removed uint16
	Message string
}

// encoder appends to a byte slice.
type encoder struct{ b []byte }

func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *encoder) str(s string) { e.u16(uint16(len(s))); e.b = append(e.b, s...) }
func (e *encoder) bytes(p []byte) {
	e.u32(uint32(len(p)))
	e.b = append(e.b, p...)
}

// frame fills in the length prefix reserved at the start of e.b.
func (e *encoder) frame() []byte {
	binary.BigEndian.PutUint32(e.b[:4], uint32(len(e.b)-4))
	return e.b
}

// encodeRequest returns the whole frame, prefix included. The caller zeroes it
// after writing. Strings longer than 65535 bytes are rejected.
func encodeRequest(r *request) ([]byte, error) {
	size := 4 + 1 + 8 + 2 + len(r.ContainerID) + 4 + 2 + len(r.Dir) + 8 + 4
	for _, f := range r.Files {
		if len(f.Secret) > 0xffff || len(f.Name) > 0xffff {
			return nil, fmt.Errorf("%w: name too long", errProtocol)
		}
		size += 2 + len(f.Secret) + 8 + 2 + len(f.Name) + 12 + 4 + len(f.Value)
	}
	if len(r.ContainerID) > 0xffff || len(r.Dir) > 0xffff || len(r.Files) > maxFiles {
		return nil, fmt.Errorf("%w: request too large", errProtocol)
	}
	if size-4 > maxFrame {
		return nil, fmt.Errorf("%w: request of %d bytes exceeds %d", errProtocol, size-4, maxFrame)
	}
	e := encoder{b: make([]byte, 4, size)}
	e.u8(protoVersion)
	e.u64(r.ID)
	e.str(r.ContainerID)
	e.u32(r.PID)
	e.str(r.Dir)
	e.u64(r.SizeBytes)
	e.u32(uint32(len(r.Files)))
	for _, f := range r.Files {
		e.str(f.Secret)
		e.u64(f.Version)
		e.str(f.Name)
		e.u32(f.Mode)
		e.u32(f.UID)
		e.u32(f.GID)
		e.bytes(f.Value)
	}
	return e.frame(), nil
}

func encodeResponse(r *response) []byte {
	msg := r.Message
	if len(msg) > 4096 {
		msg = msg[:4096]
	}
	e := encoder{b: make([]byte, 4, 4+1+8+1+1+2+2+2+len(msg))}
	e.u8(protoVersion)
	e.u64(r.ID)
	e.u8(r.Code)
	e.u8(r.Flags)
	e.u16(r.Written)
	e.u16(r.Removed)
	e.str(msg)
	return e.frame()
}

// decoder reads from a payload; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = fmt.Errorf("%w: truncated payload", errProtocol)
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8() uint8 {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if p := d.take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if p := d.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if p := d.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (d *decoder) str() string   { return string(d.take(int(d.u16()))) }
func (d *decoder) bytes() []byte { return d.take(int(d.u32())) }

func (d *decoder) version() {
	if v := d.u8(); d.err == nil && v != protoVersion {
		d.err = fmt.Errorf("%w: version %d, want %d", errProtocol, v, protoVersion)
	}
}

func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", errProtocol, len(d.b))
	}
	return d.err
}

// decodeRequest parses a payload (without its length prefix). File values
// alias payload: zero payload, not the values, when done.
func decodeRequest(payload []byte) (*request, error) {
	d := decoder{b: payload}
	d.version()
	r := &request{ID: d.u64(), ContainerID: d.str(), PID: d.u32(), Dir: d.str(), SizeBytes: d.u64()}
	n := d.u32()
	if d.err == nil && n > maxFiles {
		return nil, fmt.Errorf("%w: %d files", errProtocol, n)
	}
	for i := uint32(0); i < n && d.err == nil; i++ {
		r.Files = append(r.Files, wireFile{
			Secret: d.str(), Version: d.u64(), Name: d.str(),
			Mode: d.u32(), UID: d.u32(), GID: d.u32(), Value: d.bytes(),
		})
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return r, nil
}

func decodeResponse(payload []byte) (*response, error) {
	d := decoder{b: payload}
	d.version()
	r := &response{ID: d.u64(), Code: d.u8(), Flags: d.u8(), Written: d.u16(), Removed: d.u16(), Message: d.str()}
	if err := d.end(); err != nil {
		return nil, err
	}
	return r, nil
}

// readFrame reads one frame's payload into a new buffer.
func readFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxFrame {
		return nil, fmt.Errorf("%w: frame of %d bytes", errProtocol, n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		clear(buf)
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

// writeFull writes all of p to f.
func writeFull(f *os.File, p []byte) error {
	_, err := f.Write(p) // os.File.Write loops until done or error
	return err
}
