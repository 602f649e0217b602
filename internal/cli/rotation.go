package cli

import "coffer/internal/policy"

// rotationHelp describes a binding's rotation contract in a line.
func rotationHelp(r string) string {
	switch {
	case r == "":
		return "file (the file is swapped in place)"
	case r == policy.RotationRestartProcess:
		return "restart-process (the file is swapped; coffer exec --restart-on-change restarts the process)"
	case r == policy.RotationNone:
		return "none (a running container keeps the version it was first given)"
	}
	if sig, ok := policy.RotationSignal(r); ok {
		return r + " (the file is swapped, then the container's main process gets " + sig + ")"
	}
	return r
}

// rotationSummary is the contract in a binding's summary: nothing for the
// default.
func rotationSummary(r string) string {
	if r == "" {
		return ""
	}
	return ", rotation " + r
}

// rotationNote qualifies a holder's state in secret show.
func rotationNote(h holder) string {
	switch {
	case h.Rotation == policy.RotationNone:
		return " (rotation none: keeps its version)"
	case h.Rotation == policy.RotationRestartProcess:
		return " (restart-process: coffer exec restarts the process)"
	case h.Pending && h.Rotation != "":
		return " (" + h.Rotation + ": not signalled yet)"
	case h.Rotation != "":
		return " (" + h.Rotation + ")"
	}
	return ""
}
