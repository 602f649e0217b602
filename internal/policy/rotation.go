package policy

import (
	"fmt"
	"strings"
)

// What a container's process is told when a bound secret rotates: a
// binding's Rotation contract. The canonical form of the default, file, is
// "" (absent), so that bindings written before contracts existed are
// unchanged.
const (
	// RotationFile: the file is swapped in place (atomic rename); the
	// process reads it again when it wants to. The default.
	RotationFile = "file"
	// RotationRestartProcess: the file is swapped in place, as with file;
	// `coffer exec --restart-on-change` in the container sees the change and
	// restarts its child with the new environment. The agent does nothing
	// more than for file.
	RotationRestartProcess = "restart-process"
	// RotationNone: a container keeps the version it was first given for
	// as long as the server knows it (see the broker); revocation still
	// removes the file.
	RotationNone = "none"
	// RotationSignalPrefix starts a signal contract, "signal:SIGHUP": the
	// file is swapped, then the agent has the runtime signal the
	// container's main process.
	RotationSignalPrefix = "signal:"
)

// reloadSignals are the signals a binding may ask the runtime to send to a
// container's main process after a rotation, by name without "SIG". Signals
// that stop, kill, freeze or fault a process are not among them: a
// rotation contract asks a process to reload, and whoever may create a
// binding must not be able to stop the containers it selects by rotating a
// secret (restart-process is the contract for a restart).
var reloadSignals = map[string]bool{
	"HUP": true, "USR1": true, "USR2": true, "WINCH": true, "ALRM": true,
	"URG": true, "IO": true, "PWR": true, "VTALRM": true, "PROF": true, "CONT": true,
}

// refusedSignals say why a known signal is not a reload signal.
var refusedSignals = map[string]string{
	"KILL": "kills", "STOP": "freezes", "TSTP": "suspends", "TTIN": "suspends", "TTOU": "suspends", "TERM": "stops", "INT": "stops", "QUIT": "stops",
	"ABRT": "aborts", "SEGV": "faults", "BUS": "faults", "FPE": "faults", "ILL": "faults", "TRAP": "faults",
	"SYS": "faults", "XCPU": "kills", "XFSZ": "kills", "PIPE": "kills", "STKFLT": "kills",
}

// ParseRotation validates a rotation contract and returns its canonical
// form: "" for file (or ""), "restart-process", "none", or
// "signal:SIG<NAME>" for a signal given with or without "SIG", in any case
// ("signal:hup" is "signal:SIGHUP"). Errors wrap ErrInvalid.
func ParseRotation(s string) (string, error) {
	canon, err := parseRotation(s)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return canon, nil
}

// parseRotation is ParseRotation with an error that carries only the
// reason, naming the field.
func parseRotation(s string) (string, error) {
	switch s {
	case "", RotationFile:
		return "", nil
	case RotationRestartProcess, RotationNone:
		return s, nil
	}
	name, ok := strings.CutPrefix(s, RotationSignalPrefix)
	if !ok {
		return "", fmt.Errorf("rotation %q: want file, signal:<NAME> (e.g. signal:SIGHUP), restart-process or none", s)
	}
	canon, err := parseSignal(name)
	if err != nil {
		return "", fmt.Errorf("rotation %q: %w", s, err)
	}
	return RotationSignalPrefix + canon, nil
}

// RotationSignal returns the signal name ("SIGHUP") of a canonical
// "signal:SIGHUP" contract, and false for any other contract.
func RotationSignal(rotation string) (string, bool) {
	name, ok := strings.CutPrefix(rotation, RotationSignalPrefix)
	if !ok {
		return "", false
	}
	canon, err := parseSignal(name)
	return canon, err == nil && canon == name
}

// RotationName is the contract as people read it: "file" for "".
func RotationName(rotation string) string {
	if rotation == "" {
		return RotationFile
	}
	return rotation
}

// parseSignal returns the canonical name ("SIGHUP") of a reload signal
// named with or without "SIG", in any case.
func parseSignal(name string) (string, error) {
	short := strings.TrimPrefix(strings.ToUpper(name), "SIG")
	if reloadSignals[short] {
		return "SIG" + short, nil
	}
	if why, ok := refusedSignals[short]; ok {
		return "", fmt.Errorf("SIG%s %s the process: a rotation may only ask it to reload (SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH, ...); use restart-process to restart it", short, why)
	}
	return "", fmt.Errorf("unknown signal %q: give a name such as SIGHUP, SIGUSR1 or SIGUSR2", name)
}
