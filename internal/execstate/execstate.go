// Package execstate is the record `coffer exec` keeps, in the container's
// own Coffer tmpfs, of what its current process was started with, and the
// agent's reading of it.
//
// The record names the files whose content `coffer exec` put in its
// child's environment, each with a digest of that content (never the
// content). The agent, which knows what it wrote into each file, matches
// the digests against the versions it delivered and tells the server which
// version each process runs with: "file v4, process v3 (restart pending)".
// Digests stay on the host: the server is told versions only.
//
// The record is written by a process in the container, so the agent
// treats it as hostile input: bounded in size, strictly parsed, read
// without following links. A lying container can only misreport its own
// process's state; it learns nothing from the agent (which answers the
// server, never the container) and reaches no file outside its tmpfs.
package execstate

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"coffer/internal/secret"
)

// Name is the record's file name in the secrets directory. A binding
// cannot deliver a file of that name (delivered names are never dot
// files), and the Deliverer never touches files it did not create.
const Name = ".coffer-exec"

// MaxSize bounds a record: larger is refused unread.
const MaxSize = 64 << 10

// MaxFiles bounds the files of a record.
const MaxFiles = 256

// Sentinel errors, returned wrapped.
var (
	// ErrInvalid: a record that is not one (garbage, too large, a bad
	// field, not a regular file owned by root).
	ErrInvalid = errors.New("invalid coffer exec record")
	// ErrNoRecord: the container has no record (no coffer exec, one that
	// could not write it, or not yet).
	ErrNoRecord = errors.New("no coffer exec record")
	// ErrGone: the process is not the container's any more.
	ErrGone = errors.New("process gone")
)

// File is one file whose content is in the process's environment.
type File struct {
	File   string `json:"file"`
	SHA256 string `json:"sha256"` // Digest of the content, hex
}

// State is what the process `coffer exec` runs (or became, with exec) was
// started with.
type State struct {
	V int `json:"v"` // 1
	// PID is the process holding the environment: coffer exec's own (it
	// became the command) or its supervised child's.
	PID int `json:"pid"`
	// Restarts: coffer exec supervises the process and restarts it when a
	// file changes (--restart-on-change). Without it the process keeps its
	// environment for life.
	Restarts bool   `json:"restarts"`
	Files    []File `json:"files"`
}

// Digest is the digest of a file's content as a record holds it:
// SHA-256 over a domain label and the content, hex. Whoever can read the
// record can read the file itself (both are in the same tmpfs, the record
// root-only), so it reveals nothing new there; it never leaves the host.
func Digest(content []byte) string {
	h := sha256.New()
	h.Write([]byte("coffer-exec/v1\x00"))
	h.Write(content)
	return hex.EncodeToString(h.Sum(nil))
}

// Marshal encodes s.
func Marshal(s State) ([]byte, error) {
	s.V = 1
	if err := s.validate(); err != nil {
		return nil, err
	}
	return json.Marshal(s)
}

// Parse decodes a record, refusing anything that is not a valid version 1
// record within the bounds. Its errors never quote the input.
func Parse(data []byte) (State, error) {
	var s State
	if len(data) > MaxSize {
		return s, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return State{}, fmt.Errorf("%w: not a JSON record of the expected shape", ErrInvalid)
	}
	if dec.More() {
		return State{}, fmt.Errorf("%w: data after the record", ErrInvalid)
	}
	if err := s.validate(); err != nil {
		return State{}, err
	}
	return s, nil
}

func (s *State) validate() error {
	if s.V != 1 {
		return fmt.Errorf("%w: version %d, want 1", ErrInvalid, s.V)
	}
	if s.PID <= 0 {
		return fmt.Errorf("%w: no pid", ErrInvalid)
	}
	if len(s.Files) > MaxFiles {
		return fmt.Errorf("%w: %d files, at most %d", ErrInvalid, len(s.Files), MaxFiles)
	}
	seen := make(map[string]bool, len(s.Files))
	for i, f := range s.Files {
		if secret.ValidateFileName(f.File) != nil {
			return fmt.Errorf("%w: file %d: not a delivered file name", ErrInvalid, i)
		}
		if seen[f.File] {
			return fmt.Errorf("%w: file %d: listed twice", ErrInvalid, i)
		}
		seen[f.File] = true
		if len(f.SHA256) != 2*sha256.Size {
			return fmt.Errorf("%w: file %d: digest is not %d hex digits", ErrInvalid, i, 2*sha256.Size)
		}
		if _, err := hex.DecodeString(f.SHA256); err != nil {
			return fmt.Errorf("%w: file %d: digest is not %d hex digits", ErrInvalid, i, 2*sha256.Size)
		}
	}
	return nil
}
