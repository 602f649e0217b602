package execwrap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"

	"coffer/internal/execstate"
)

// environ is a child's environment built from secret files. Its strings
// alias buffers Zero overwrites: once the child started, nothing of the
// values is left in the wrapper's own memory (the Go runtime's copy for
// execve is garbage the wrapper cannot reach).
type environ struct {
	bufs  [][]byte // file contents and "NAME=value" strings
	vars  []string // "NAME=value", aliasing bufs
	names []string // the secret variables' names, sorted
	// digests of the files read, for the record (see execstate)
	digests []execstate.File
}

// Zero overwrites every buffer; the strings must not be used after.
func (e *environ) Zero() {
	for _, b := range e.bufs {
		clear(b)
	}
	e.bufs, e.vars = nil, nil
}

// digest notes the digest of file's content b, once per file.
func (e *environ) digest(file string, b []byte) {
	if !slices.ContainsFunc(e.digests, func(d execstate.File) bool { return d.File == file }) {
		e.digests = append(e.digests, execstate.File{File: file, SHA256: execstate.Digest(b)})
	}
}

// alias returns b as a string without copying it.
func alias(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// load reads every variable of s from its files. On error nothing is kept
// (buffers zeroed) and the error names the file and variable only.
func load(s *Spec) (_ *environ, err error) {
	e := &environ{}
	defer func() {
		if err != nil {
			e.Zero()
		}
	}()
	from := map[string]string{} // variable name → where it comes from
	add := func(name, where string, v []byte) error {
		if prev, dup := from[name]; dup {
			return fmt.Errorf("%w: %s is set by %s and by %s", ErrUsage, name, prev, where)
		}
		from[name] = where
		if bytes.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("%w: %s (%s) holds a NUL byte, which an environment variable cannot", ErrValue, name, where)
		}
		n := len(name) + 1 + len(v)
		if n > maxEnvString {
			return fmt.Errorf("%w: %s (%s) is %d bytes; the kernel takes at most %d per variable", ErrValue, name, where, n, maxEnvString)
		}
		kv := make([]byte, n)
		copy(kv, name)
		kv[len(name)] = '='
		copy(kv[len(name)+1:], v)
		e.bufs = append(e.bufs, kv)
		e.vars = append(e.vars, alias(kv))
		e.names = append(e.names, name)
		return nil
	}
	for _, v := range s.Env {
		b, err := readFile(s.Dir, v.File)
		if err != nil {
			return nil, err
		}
		e.bufs = append(e.bufs, b)
		e.digest(v.File, b)
		if err := add(v.Name, "--env "+v.Name+"="+v.File, b); err != nil {
			return nil, err
		}
	}
	for _, f := range s.EnvFiles {
		b, err := readFile(s.Dir, f)
		if err != nil {
			return nil, err
		}
		e.bufs = append(e.bufs, b)
		e.digest(f, b)
		entries, err := ParseDotenv(b)
		if err != nil {
			return nil, fmt.Errorf("%w: --env-file %s: %w", ErrUsage, filepath.Join(s.Dir, f), err)
		}
		for _, en := range entries {
			if err := add(en.Name, fmt.Sprintf("%s line %d", filepath.Join(s.Dir, f), en.Line), en.Value); err != nil {
				return nil, err
			}
		}
	}
	slices.Sort(e.names)
	return e, nil
}

// readFile reads dir/name, which must be a regular file.
func readFile(dir, name string) ([]byte, error) {
	p := filepath.Join(dir, name)
	f, err := os.Open(p)
	if err != nil {
		return nil, missing(p, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, missing(p, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrMissing, p)
	}
	if fi.Size() > 64<<20 {
		return nil, fmt.Errorf("%w: %s is larger than 64 MiB", ErrValue, p)
	}
	b := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		clear(b)
		return nil, fmt.Errorf("%w: %s: %v", ErrMissing, p, err)
	}
	return b, nil
}

func missing(p string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %s does not exist (not delivered: does a binding select this container? --wait waits for it)", ErrMissing, p)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %s: permission denied (the binding's --mode, --uid and --gid must let this user read it)", ErrMissing, p)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%w: %s: %v", ErrMissing, p, pe.Err)
	}
	return fmt.Errorf("%w: %s: %v", ErrMissing, p, err)
}

// childEnv is base without the variables e sets, then e's variables.
func childEnv(base []string, e *environ) []string {
	out := make([]string, 0, len(base)+len(e.vars))
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		if _, found := slices.BinarySearch(e.names, name); !found {
			out = append(out, kv)
		}
	}
	return append(out, e.vars...)
}
