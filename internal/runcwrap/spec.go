package runcwrap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// ErrBadSpec: the bundle's config.json could not be read or is not an OCI
// spec the wrapper can extend; the message says why.
var ErrBadSpec = errors.New("bad OCI spec")

// MaxSpecBytes bounds a bundle's config.json (Docker's are a few KiB; the
// environment and the mounts make them grow).
const MaxSpecBytes = 16 << 20

// Hook is one OCI hook (runtime-spec config.md#posix-platform-hooks).
type Hook struct {
	Path    string   `json:"path"`
	Args    []string `json:"args,omitempty"`
	Env     []string `json:"env,omitempty"`
	Timeout *int     `json:"timeout,omitempty"`
}

// Patch is what Extend adds to a spec.
type Patch struct {
	// Hook is appended to hooks.createRuntime unless an entry with the
	// same path and arguments is there already.
	Hook Hook
	// Annotations are set (never removed: a value the spec has already
	// is overwritten only by a Patch that sets the same key).
	Annotations map[string]string
}

// Extend returns spec (an OCI config.json) with p applied, every other
// member kept (the same JSON values; whitespace compacted, top-level keys
// sorted, which runtimes do not care about). It fails on
// anything that is not a JSON object whose "hooks" and "annotations", if
// present, have the spec's shapes.
func Extend(spec []byte, p Patch) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := strictUnmarshal(spec, &top); err != nil || top == nil {
		return nil, fmt.Errorf("%w: not a JSON object: %v", ErrBadSpec, err)
	}
	hooks := map[string]json.RawMessage{}
	if raw, ok := top["hooks"]; ok && !isNull(raw) {
		if err := strictUnmarshal(raw, &hooks); err != nil || hooks == nil {
			return nil, fmt.Errorf("%w: field \"hooks\": not an object", ErrBadSpec)
		}
	}
	var create []json.RawMessage
	if raw, ok := hooks["createRuntime"]; ok && !isNull(raw) {
		if err := strictUnmarshal(raw, &create); err != nil {
			return nil, fmt.Errorf("%w: field \"hooks.createRuntime\": not an array", ErrBadSpec)
		}
	}
	present := false
	for i, raw := range create {
		var h Hook
		if err := strictUnmarshal(raw, &h); err != nil {
			return nil, fmt.Errorf("%w: field \"hooks.createRuntime[%d]\": not a hook", ErrBadSpec, i)
		}
		if h.Path == p.Hook.Path && slices.Equal(h.Args, p.Hook.Args) {
			present = true
		}
	}
	if !present {
		b, err := json.Marshal(p.Hook)
		if err != nil {
			return nil, err
		}
		create = append(create, b)
		if hooks["createRuntime"], err = json.Marshal(create); err != nil {
			return nil, err
		}
		if top["hooks"], err = json.Marshal(hooks); err != nil {
			return nil, err
		}
	}
	if len(p.Annotations) > 0 {
		ann := map[string]string{}
		if raw, ok := top["annotations"]; ok && !isNull(raw) {
			if err := strictUnmarshal(raw, &ann); err != nil || ann == nil {
				return nil, fmt.Errorf("%w: field \"annotations\": not an object of strings", ErrBadSpec)
			}
		}
		for k, v := range p.Annotations {
			ann[k] = v
		}
		var err error
		if top["annotations"], err = json.Marshal(ann); err != nil {
			return nil, err
		}
	}
	return json.Marshal(top)
}

// Annotations returns the spec's annotations (nil if it has none or they
// cannot be read).
func Annotations(spec []byte) map[string]string {
	var s struct {
		Annotations map[string]string `json:"annotations"`
	}
	if json.Unmarshal(spec, &s) != nil {
		return nil
	}
	return s.Annotations
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// strictUnmarshal is json.Unmarshal that also refuses data after the
// value.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON value")
	}
	return nil
}

// ReadSpec reads dir/config.json: a regular file (not a symlink) of at
// most MaxSpecBytes. It returns the file's permission bits too.
func ReadSpec(dir string) ([]byte, os.FileMode, error) {
	name := filepath.Join(dir, "config.json")
	f, err := os.OpenFile(name, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrBadSpec, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrBadSpec, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%w: %s is not a regular file", ErrBadSpec, name)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSpecBytes+1))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrBadSpec, err)
	}
	if len(b) > MaxSpecBytes {
		return nil, 0, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadSpec, name, MaxSpecBytes)
	}
	return b, fi.Mode().Perm(), nil
}

// WriteSpec replaces dir/config.json with b atomically: a new file in dir
// with mode perm, synced, renamed over the old one. A reader sees the old
// spec or the new one, never a part.
func WriteSpec(dir string, b []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(dir, ".config.json.coffer-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(b); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "config.json"))
}
