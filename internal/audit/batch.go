package audit

import (
	"context"
)

// AppendAll records es in their order, as len(es) calls of Append made one
// after the other would, but waits once for all of them: a caller with
// many records to write (the broker's delivery records, thousands per
// rollout) shares group commits with itself instead of paying one write,
// fsync and anchor save per record. With Options.Linger they also wait up
// to that long for more records before their group commit (unless an
// Append or Close commits them sooner). Records of other callers may be
// interleaved with es. It returns one error per record, nil where the
// record is durable; the errors are those of Append. If ctx ends first,
// the records not yet released get ctx's error and may or may not be
// written. The Log takes es' Details maps over: the caller must not change
// them afterwards (the broker's delivery records are built for it, and a
// copy of each was a tenth of a rollout's allocations).
func (l *Log) AppendAll(ctx context.Context, es []Event) []error {
	errs := make([]error, len(es))
	ps := make([]*pending, 0, len(es))
	idx := make([]int, 0, len(es))
	for i, e := range es {
		e, err := prepareOwned(e, l.now)
		if err != nil {
			errs[i] = err
			continue
		}
		e.Server = l.server
		ps = append(ps, &pending{e: e, out: make(chan struct{})})
		idx = append(idx, i)
	}
	if len(ps) == 0 {
		return errs
	}
	if err := l.enqueue(ps...); err != nil {
		for _, i := range idx {
			errs[i] = err
		}
		return errs
	}
	for j, p := range ps {
		select {
		case <-p.out:
			errs[idx[j]] = p.err
		case <-ctx.Done():
			err := errMayBeWritten(ctx)
			for _, i := range idx[j:] {
				errs[i] = err
			}
			return errs
		}
	}
	return errs
}
