package cli

import (
	"fmt"

	"coffer/internal/policy"
)

// holderProcess is what a holder's process runs with, when coffer exec put
// the secret in its environment (see docs/consumers.md).
type holderProcess struct {
	Version uint64 `json:"version"` // 0: an older version the agent cannot name
	State   string `json:"state"`   // current, restart-pending, stale
}

// processNote says what h's process runs with, after its file's state.
func processNote(h holder) string {
	p := h.Process
	if p == nil {
		return ""
	}
	v := fmt.Sprintf("v%d", p.Version)
	if p.Version == 0 {
		v = "an older version"
	}
	switch p.State {
	case "current":
		return ", process " + v
	case "restart-pending":
		return fmt.Sprintf(", file v%d but process still on %s (restart pending)", h.Version, v)
	case "stale":
		return fmt.Sprintf(", file v%d but process on %s for life (coffer exec without --restart-on-change: restart the container)", h.Version, v)
	}
	return ", process " + v + " " + p.State
}

// restartsPending counts, for each secret of a restart-process binding in
// bs, the containers whose process has not restarted onto its file's
// version yet (one secret show each; -1 if it cannot be read).
func restartsPending(cl *client, bs []binding) map[string]int {
	out := map[string]int{}
	for _, b := range bs {
		if b.Rotation != policy.RotationRestartProcess {
			continue
		}
		if _, done := out[b.Secret]; done {
			continue
		}
		var m secretMeta
		if cl.do("GET", "/v1/secrets/"+escapePath(b.Secret), nil, &m) != nil {
			out[b.Secret] = -1
			continue
		}
		n := 0
		for _, h := range m.Holders {
			if h.Process != nil && h.Process.State == "restart-pending" {
				n++
			}
		}
		out[b.Secret] = n
	}
	return out
}

// rotationCell is a binding's ROTATION in bind ls: its contract, and for
// restart-process how many containers wait for their process's restart.
func rotationCell(b binding, pending map[string]int) string {
	r := policy.RotationName(b.Rotation)
	switch n := pending[b.Secret]; {
	case b.Rotation != policy.RotationRestartProcess || n == 0:
	case n == 1:
		r += " (1 restart pending)"
	case n > 1:
		r += fmt.Sprintf(" (%d restarts pending)", n)
	}
	return r
}
