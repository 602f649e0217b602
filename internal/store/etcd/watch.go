package etcd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"coffer/internal/store"
)

// maxWatchBatch bounds the changes Watch gives fn in one call when several
// watch responses are waiting.
const maxWatchBatch = 4096

var (
	_ store.Watcher = (*Backend)(nil)
	_ store.Pinger  = (*Backend)(nil)
)

// Watch implements store.Watcher with an etcd watch on "<prefix>/d/" +
// prefix. It reads the current revision, calls fn(nil, true), then
// watches from the next revision: nothing committed after the caller's
// reload is missed. A broken watch (a member lost, no leader, the cluster
// away) is opened again from the revision after the last change seen, so
// no change is skipped; when etcd has compacted that revision away, fn is
// called with reset again. The watch requires a leader: a member cut off
// from the others ends it, and the client moves to another member.
func (b *Backend) Watch(ctx context.Context, prefix string, fn func([]store.Change, bool)) error {
	key := b.data + prefix
	var rev int64 // the last revision whose changes fn has seen; 0: reload first
	backoff := 50 * time.Millisecond
	wait := func() bool {
		d := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		backoff = min(2*backoff, time.Second)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for ctx.Err() == nil {
		if rev == 0 {
			rctx, cancel := b.rpcCtx(ctx)
			resp, err := b.cli.Get(rctx, b.clock)
			cancel()
			if err != nil {
				if !wait() {
					break
				}
				continue
			}
			rev = resp.Header.Revision
			fn(nil, true)
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		ch := b.cli.Watch(wctx, key, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		// What has come in while fn was busy with the last changes is
		// given to it at once, in commit order, up to maxWatchBatch: a
		// receiver slower than the writers (one that does a fleet-wide
		// regrant per binding change) then catches up instead of falling
		// further behind.
		for resp := range ch {
			var changes []store.Change
			ok := b.take(resp, &rev, &changes)
			for ok && len(changes) < maxWatchBatch {
				next, ready := readyResponse(ch)
				if !ready {
					break
				}
				ok = b.take(next, &rev, &changes)
			}
			if len(changes) > 0 {
				backoff = 50 * time.Millisecond
				fn(changes, false) // rev is past them
			}
			if !ok {
				break
			}
		}
		cancel()
		if ctx.Err() != nil || !wait() {
			break
		}
	}
	return ctx.Err()
}

// take appends resp's changes to changes and moves rev past them, and
// reports whether the watch goes on. A broken watch ends it; one whose
// history was compacted away also sets rev to 0 and drops changes: the
// reload covers them.
func (b *Backend) take(resp clientv3.WatchResponse, rev *int64, changes *[]store.Change) bool {
	if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
		b.cfg.Logger.Warn("etcd store: watch history compacted while away; reloading", "from", *rev+1, "compacted", resp.CompactRevision)
		*rev, *changes = 0, nil
		return false
	}
	if err := resp.Err(); err != nil {
		b.cfg.Logger.Warn("etcd store: watch broken; resuming", "from", *rev+1, "err", err)
		return false
	}
	for _, ev := range resp.Events {
		c := store.Change{Key: strings.TrimPrefix(string(ev.Kv.Key), b.data)}
		if ev.Type == clientv3.EventTypeDelete {
			c.Deleted = true
		} else {
			c.Value = ev.Kv.Value
			if c.Value == nil {
				c.Value = []byte{}
			}
		}
		*changes = append(*changes, c)
		*rev = max(*rev, ev.Kv.ModRevision)
	}
	return true
}

// readyResponse returns a response of ch that is ready now, without
// waiting for one; ready is false if there is none (or ch is closed). The
// client hands responses over one at a time from a goroutine of its own,
// so it is given a few chances to.
func readyResponse(ch clientv3.WatchChan) (resp clientv3.WatchResponse, ready bool) {
	for range 10 {
		select {
		case resp, ok := <-ch:
			return resp, ok
		default:
			runtime.Gosched()
		}
	}
	return clientv3.WatchResponse{}, false
}

// Ping implements store.Pinger: one quorum read of the store's own key,
// within RequestTimeout. Its error wraps store.ErrUnavailable.
func (b *Backend) Ping(ctx context.Context) error {
	rctx, cancel := b.rpcCtx(ctx)
	defer cancel()
	if _, err := b.cli.Get(rctx, b.clock); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("etcd store %s: %w: %v", strings.Join(b.cfg.Endpoints, ","), store.ErrUnavailable, cause(err))
	}
	return nil
}

// isUnavailable reports whether err says that etcd could not serve the
// request (no connection, no leader, no answer in time), as opposed to a
// refusal of the request itself.
func isUnavailable(err error) bool {
	for _, e := range []error{rpctypes.ErrNoLeader, rpctypes.ErrNotCapable, rpctypes.ErrStopped, rpctypes.ErrTimeout,
		rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost, rpctypes.ErrLeaderChanged} {
		if errors.Is(err, e) {
			return true
		}
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded)
}
