package hook

import (
	"encoding/json"
	"fmt"
	"io"
)

// The hook and the agent exchange one JSON object each way per
// connection: the hook writes a request and closes its write side, the
// agent answers and closes.

const (
	wireVersion     = 1
	maxRequestBytes = MaxStateBytes + 4096
	maxReplyBytes   = 64 << 10
)

// request is what the hook sends.
type request struct {
	V     int   `json:"v"`
	State State `json:"state"`
}

// Reply is the agent's verdict. It never holds a secret.
type Reply struct {
	V int `json:"v"`
	// Start: the container may start (false only for a pod that requires
	// its secrets, whose files could not be written).
	Start bool `json:"start"`
	// Ready: the container's files are in place (or it is bound to none).
	Ready bool `json:"ready"`
	// Required: the pod is annotated coffer/require-secrets=true.
	Required bool   `json:"required,omitempty"`
	Message  string `json:"message,omitempty"`
}

func readJSON(r io.Reader, limit int64, v any) error {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return err
	}
	defer clear(b)
	if int64(len(b)) > limit {
		return fmt.Errorf("larger than %d bytes", limit)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("not JSON: %s", clip(err.Error()))
	}
	return nil
}
