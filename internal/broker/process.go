package broker

import (
	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/policy"
)

// Process states of a holder (Holder.Process.State).
const (
	// ProcessCurrent: the container's process runs with the version its
	// file holds.
	ProcessCurrent = "current"
	// ProcessRestartPending: it runs with another version, and coffer exec
	// --restart-on-change will restart it (it is within its grace period,
	// or the new files could not be used, or the restart failed).
	ProcessRestartPending = "restart-pending"
	// ProcessStale: it runs with another version and nothing will restart
	// it (coffer exec without --restart-on-change: the environment is the
	// process's for life). Restart the container.
	ProcessStale = "stale"
)

// ProcessState is what a container's process runs with, for one secret,
// when coffer exec put the secret's file in its environment and the agent
// reported it.
type ProcessState struct {
	// Version is the secret's version in the process's environment; 0: a
	// content the agent cannot name (older than the versions it remembers).
	Version uint64 `json:"version"`
	State   string `json:"state"`
}

// processOf keeps of an agent's process report what is about files it was
// sent: each file once, with the secret it was sent. A lying agent (or a
// lying container, through its record) can only misreport its own
// containers' processes.
func processOf(sent []*cofferv1.FileRef, rep []*cofferv1.ProcessFile) []*cofferv1.ProcessFile {
	var out []*cofferv1.ProcessFile
	for _, p := range rep {
		if len(out) == len(sent) {
			break
		}
		for _, f := range sent {
			if f.File == p.GetFile() && f.Secret == p.GetSecret() {
				dup := false
				for _, o := range out {
					dup = dup || o.File == f.File
				}
				if !dup {
					out = append(out, &cofferv1.ProcessFile{File: f.File, Secret: f.Secret, Version: p.GetVersion(), Restarts: p.GetRestarts()})
				}
				break
			}
		}
	}
	return out
}

// processState is c's process state for secret name, nil if not reported:
// the first file of the secret whose process does not run with the
// acknowledged version, or else current.
func processState(c *ctr, name string) *ProcessState {
	var st *ProcessState
	for _, p := range c.process {
		if p.Secret != name {
			continue
		}
		for _, f := range c.applied {
			if f.File != p.File || f.Secret != name {
				continue
			}
			s := &ProcessState{Version: p.Version, State: ProcessCurrent}
			switch {
			case p.Version == f.Version:
			case p.Restarts:
				s.State = ProcessRestartPending
			default:
				s.State = ProcessStale
			}
			if st == nil || st.State == ProcessCurrent {
				st = s
			}
		}
	}
	return st
}

// heldPin is, for a none file the broker never sent c (it restarted, or
// took the agent over), the version the agent reported c holds when its
// stream started (Container.held), while it can still be opened and is
// older than current; else current. What a stolen agent key gains by
// lying: an older, not yet pruned version of a secret a container it
// reports is bound to with none (a revoked version cannot be opened).
func (b *Broker) heldPin(c *ctr, g policy.Grant, current uint64) (uint64, bool) {
	for _, f := range c.desired {
		if f.File == g.File {
			return current, true // sent by this broker: its own record decides
		}
	}
	for _, f := range c.info.GetHeld() {
		if f.GetFile() == g.File && f.GetSecret() == g.Secret && f.GetVersion() < current && f.GetVersion() > 0 {
			_, ready, err := b.lookup(c, verKey{f.Secret, f.Version})
			if !ready {
				return 0, false // read outside the lock; c is pushed again when it is in
			}
			if err == nil {
				return f.Version, true
			}
		}
	}
	return current, true
}
