package agent

import (
	"context"
	"errors"
	"slices"
	"time"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/execstate"
	"coffer/internal/secret"
)

// The process state of a container: which version of each file its
// process runs with, when `coffer exec` put the file in its environment.
// coffer exec keeps a record of it in the container's tmpfs (package
// execstate): file names and digests of their content. The agent matches
// the digests against what it wrote, and tells the server versions only,
// with its acknowledgements; when the process changes later (coffer exec
// restarted it), it acknowledges the same generation again.

// ExecStateReader reads a container's coffer exec record, raw and bounded
// (execstate.ProcReader; a fake in tests). Its errors: execstate.ErrNoRecord
// when there is none.
type ExecStateReader interface {
	Read(ctx context.Context, containerID string, pid int) ([]byte, error)
}

// Defaults of the process watch.
const (
	// processWatch is how long after an Apply the agent looks for a
	// record while it has none (coffer exec --wait starts the process
	// after the first delivery). A process whose restart is pending is
	// watched until it restarted; a current one, or one that never
	// restarts, is looked at again on the next Apply only.
	processWatch = 2 * time.Minute
	// processPoll is how often it looks, while it watches.
	processPoll = time.Second
	// digestHistory is how many versions of each file the agent remembers
	// the digest of, to name the version a process still runs with.
	digestHistory = 4
)

// fileDigest is the digest of one version the agent wrote into a file.
type fileDigest struct {
	key verKey
	sum string
}

// procState is a target's process watch.
type procState struct {
	digests    map[string][]fileDigest // by file, newest first
	okGen      uint64                  // the generation last applied without error
	wantSess   uint64                  // the stream the wanted state came on (Agent.sessionN)
	curSess    uint64                  // the stream the current state came on
	report     []*cofferv1.ProcessFile // last sent
	watchUntil time.Time
	logged     string // the last refusal of a record logged, once each
}

// noteDigests returns the digests of files just written into a
// container, after prev's. Called without a.mu by the target's one worker:
// the values are its current state's, referenced until its next step.
//
// prev is never changed (a process watch may read it without a.mu): when
// every file is the version prev has newest for it, and prev names no other
// file, prev itself is returned.
func noteDigests(prev map[string][]fileDigest, files []secret.File) map[string][]fileDigest {
	if len(prev) == len(files) && prev != nil {
		same := true
		for _, f := range files {
			hist := prev[f.Name]
			if len(hist) == 0 || hist[0].key != (verKey{f.Secret, f.Version}) {
				same = false
				break
			}
		}
		if same {
			return prev
		}
	}
	out := make(map[string][]fileDigest, len(files))
	for _, f := range files {
		k := verKey{f.Secret, f.Version}
		hist := prev[f.Name]
		if len(hist) == 0 || hist[0].key != k {
			next := make([]fileDigest, 0, min(len(hist)+1, digestHistory))
			next = append(next, fileDigest{key: k, sum: execstate.Digest(f.Value)})
			hist = append(next, hist[:min(len(hist), digestHistory-1)]...)
		}
		out[f.Name] = hist[:min(len(hist), digestHistory)]
	}
	return out
}

// processReport reads t's record and matches it against d and digests:
// one entry per file of d that the record lists. ok is false when there is
// nothing to report (no reader, no record, a record refused: logged once).
func (a *Agent) processReport(ctx context.Context, info containerRef, d *cofferv1.Desired, digests map[string][]fileDigest, prevLogged string) (rep []*cofferv1.ProcessFile, logged string) {
	if a.cfg.ExecState == nil || d == nil {
		return nil, ""
	}
	raw, err := a.cfg.ExecState.Read(ctx, info.id, info.pid)
	var st execstate.State
	if err == nil {
		st, err = execstate.Parse(raw)
	}
	if err != nil {
		switch {
		case errors.Is(err, execstate.ErrNoRecord):
		case errors.Is(err, execstate.ErrGone):
			a.log.Debug("coffer exec record not read", "container", info.name, "id", info.id, "err", err)
		default:
			logged = err.Error()
			if logged != prevLogged {
				a.log.Warn("coffer exec record in the container refused; its process state is not reported", "container", info.name, "id", info.id, "err", err)
			}
		}
		return nil, logged
	}
	for _, rf := range st.Files {
		i := slices.IndexFunc(d.GetFiles(), func(f *cofferv1.FileRef) bool { return f.File == rf.File })
		if i < 0 {
			continue // not (or no longer) delivered: nothing of ours to report
		}
		f := d.GetFiles()[i]
		p := &cofferv1.ProcessFile{File: f.File, Secret: f.Secret, Restarts: st.Restarts}
		for _, h := range digests[f.File] {
			if h.sum == rf.SHA256 && h.key.secret == f.Secret {
				p.Version = h.key.version
				break
			}
		}
		rep = append(rep, p)
	}
	return rep, ""
}

// containerRef is what processReport needs of a container.
type containerRef struct {
	id, name string
	pid      int
}

// stale reports whether a process of rep still runs with content other
// than d's and will be restarted for it: the watch goes on.
func stale(rep []*cofferv1.ProcessFile, d *cofferv1.Desired) bool {
	for _, p := range rep {
		for _, f := range d.GetFiles() {
			if f.File == p.File && (f.Version != p.Version || f.Secret != p.Secret) && p.Restarts {
				return true
			}
		}
	}
	return false
}

func sameReport(a, b []*cofferv1.ProcessFile) bool {
	return slices.EqualFunc(a, b, func(x, y *cofferv1.ProcessFile) bool {
		return x.File == y.File && x.Secret == y.Secret && x.Version == y.Version && x.Restarts == y.Restarts
	})
}

// watchProcesses looks again, every processPoll, at the record of each
// container whose process state may still change, and acknowledges its
// generation again when it did.
func (a *Agent) watchProcesses(ctx context.Context) {
	if a.cfg.ExecState == nil {
		return
	}
	tick := time.NewTicker(processPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		type job struct {
			t       *target
			ref     containerRef
			d       *cofferv1.Desired
			digests map[string][]fileDigest
			logged  string
		}
		var jobs []job
		a.mu.Lock()
		for _, t := range a.targets {
			d := t.current
			if t.busy || t.gone || d == nil || t.proc.okGen != d.Generation || t.proc.curSess != a.sessionN {
				continue // a worker will report; or the last apply failed; or the state is another stream's
			}
			waiting := t.proc.report == nil && now.Before(t.proc.watchUntil)
			if !waiting && !stale(t.proc.report, d) {
				continue
			}
			jobs = append(jobs, job{t, containerRef{t.info.ID, t.info.Name, t.info.PID}, d, t.proc.digests, t.proc.logged})
		}
		a.mu.Unlock()
		for _, j := range jobs {
			rep, logged := a.processReport(ctx, j.ref, j.d, j.digests, j.logged)
			a.mu.Lock()
			j.t.proc.logged = logged
			if j.t.current == j.d && !j.t.busy && j.t.proc.curSess == a.sessionN && !sameReport(rep, j.t.proc.report) {
				j.t.proc.report = rep
				a.enqueueLocked(&cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Applied{Applied: &cofferv1.Applied{
					ContainerId: j.ref.id, Generation: j.d.Generation, Process: rep, ProcessOnly: true}}})
				a.log.Debug("process state changed", "container", j.ref.name, "generation", j.d.Generation)
			}
			a.mu.Unlock()
		}
	}
}

// heldRefs is what t's container holds, for a new stream's report.
func heldRefs(t *target) []*cofferv1.FileRef {
	if t == nil || len(t.held) == 0 {
		return nil
	}
	out := make([]*cofferv1.FileRef, 0, len(t.held))
	for file, k := range t.held {
		out = append(out, &cofferv1.FileRef{File: file, Secret: k.secret, Version: k.version})
	}
	slices.SortFunc(out, func(x, y *cofferv1.FileRef) int {
		if x.File < y.File {
			return -1
		}
		if x.File > y.File {
			return 1
		}
		return 0
	})
	return out
}
