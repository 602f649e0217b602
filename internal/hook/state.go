package hook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"unicode/utf8"
)

// Bounds on an OCI state. The runtime's state is a few hundred bytes plus
// the container's annotations, which the kubelet and the pod's author
// choose (the API server caps a pod's annotations at 256 KiB).
const (
	MaxStateBytes  = 512 << 10
	MaxAnnotations = 1024
	maxPathBytes   = 4096
)

// Annotations the CRI (containerd, CRI-O) puts into a container's OCI spec.
const (
	AnnotationSandboxID     = "io.kubernetes.cri.sandbox-id"
	AnnotationContainerName = "io.kubernetes.cri.container-name"
	AnnotationContainerType = "io.kubernetes.cri.container-type"
	// CRI-O's spelling of the container type.
	annotationCRIOContainerType = "io.kubernetes.cri-o.ContainerType"
)

// idPattern is what a runtime's container id looks like (containerd and
// CRI-O use 64 hex digits): long enough that finding it in a process's
// cgroup path identifies the container.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{11,127}$`)

// State is the OCI runtime state a hook reads on stdin
// (runtime-spec/runtime.md#state).
type State struct {
	Version     string            `json:"ociVersion,omitempty"`
	ID          string            `json:"id"`
	Status      string            `json:"status,omitempty"`
	PID         int               `json:"pid"`
	Bundle      string            `json:"bundle,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Required reports whether the state's annotations say the pod requires
// its secrets (only the hook uses it, when it cannot ask the agent: the
// agent reads the pod's annotations from the runtime).
func (s State) Required() bool { return s.Annotations[RequireAnnotation] == "true" }

// Sandbox reports whether the state is a pod sandbox's (the pause
// container): CRI-O runs hooks.d hooks for it too; it never gets files.
func (s State) Sandbox() bool {
	return s.Annotations[AnnotationContainerType] == "sandbox" || s.Annotations[annotationCRIOContainerType] == "sandbox"
}

// ParseState reads one OCI state from r: at most MaxStateBytes, one JSON
// object and nothing after it. Errors wrap ErrBadState and name the field.
func ParseState(r io.Reader) (State, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxStateBytes+1))
	if err != nil {
		return State{}, fmt.Errorf("%w: read: %w", ErrBadState, err)
	}
	defer clear(b)
	if len(b) > MaxStateBytes {
		return State{}, fmt.Errorf("%w: larger than %d bytes", ErrBadState, MaxStateBytes)
	}
	return parseState(b)
}

func parseState(b []byte) (State, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return State{}, fmt.Errorf("%w: empty (a createRuntime hook reads the container's state on stdin)", ErrBadState)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var s State
	if err := dec.Decode(&s); err != nil {
		return State{}, fmt.Errorf("%w: not a JSON object with id, pid, bundle, annotations: %s", ErrBadState, clip(err.Error()))
	}
	if dec.More() {
		return State{}, fmt.Errorf("%w: data after the JSON object", ErrBadState)
	}
	if err := s.Validate(); err != nil {
		return State{}, err
	}
	return s, nil
}

// Validate checks a state's fields.
func (s State) Validate() error {
	if !idPattern.MatchString(s.ID) {
		return fmt.Errorf("%w: field \"id\": %q is not a container id", ErrBadState, clip(s.ID))
	}
	if s.PID <= 1 || s.PID > 1<<22 {
		return fmt.Errorf("%w: field \"pid\": %d is not a container's process", ErrBadState, s.PID)
	}
	if s.Bundle != "" && (len(s.Bundle) > maxPathBytes || !filepath.IsAbs(s.Bundle) || !utf8.ValidString(s.Bundle)) {
		return fmt.Errorf("%w: field \"bundle\": want an absolute path", ErrBadState)
	}
	if len(s.Version) > 64 || len(s.Status) > 64 || !utf8.ValidString(s.Version) || !utf8.ValidString(s.Status) {
		return fmt.Errorf("%w: field \"ociVersion\" or \"status\": too long or not UTF-8", ErrBadState)
	}
	if len(s.Annotations) > MaxAnnotations {
		return fmt.Errorf("%w: field \"annotations\": %d entries, at most %d", ErrBadState, len(s.Annotations), MaxAnnotations)
	}
	for k, v := range s.Annotations {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("%w: field \"annotations\": %q is not UTF-8", ErrBadState, clip(k))
		}
	}
	return nil
}

// clip bounds text from a caller in errors and logs.
func clip(s string) string {
	if len(s) > 128 {
		s = s[:128] + "…"
	}
	return string(bytes.ToValidUTF8([]byte(s), []byte("?")))
}
