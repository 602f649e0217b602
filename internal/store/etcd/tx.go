package etcd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"coffer/internal/store"
)

// listPage is how many keys one List request fetches.
const listPage = 256

// tx is one View or one attempt of an Update.
type tx struct {
	b      *Backend
	ctx    context.Context
	rev    int64 // the snapshot's revision; 0 until the first read
	failed error // the first failed read: the transaction is void

	update bool
	reads  map[string]int64 // etcd key -> mod revision seen (0: absent)
	ranges [][2]string      // listed [start, end) ranges
	clock  *int64           // mod revision of b.clock at rev, once read
	writes map[string]write // etcd key -> pending write
}

type write struct {
	value []byte
	del   bool
}

var _ store.Tx = (*tx)(nil)

func (t *tx) fail(err error) error {
	if t.failed == nil {
		t.failed = err
	}
	return err
}

// get reads one etcd key at the snapshot.
func (t *tx) get(key string) (value []byte, modRev int64, found bool, err error) {
	if t.failed != nil {
		return nil, 0, false, t.failed
	}
	var opts []clientv3.OpOption
	if t.rev > 0 {
		opts = append(opts, clientv3.WithRev(t.rev))
	}
	ctx, cancel := t.b.rpcCtx(t.ctx)
	defer cancel()
	resp, err := t.b.cli.Get(ctx, key, opts...)
	if err != nil {
		return nil, 0, false, t.fail(t.readErr(err))
	}
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, false, nil
	}
	kv := resp.Kvs[0]
	if kv.Value == nil {
		kv.Value = []byte{}
	}
	return kv.Value, kv.ModRevision, true, nil
}

func (t *tx) readErr(err error) error {
	if errors.Is(err, rpctypes.ErrCompacted) {
		return fmt.Errorf("etcd store: revision %d was compacted during the transaction: %w", t.rev, err)
	}
	if ctxErr := t.ctx.Err(); ctxErr != nil {
		return fmt.Errorf("etcd store: read: %w", ctxErr)
	}
	return fmt.Errorf("etcd store: read: %w", t.b.timeoutErr(err))
}

func (t *tx) Get(key string) ([]byte, error) {
	ek := t.b.data + key
	if w, ok := t.writes[ek]; ok {
		if w.del {
			return nil, fmt.Errorf("%q: %w", key, store.ErrNotFound)
		}
		return w.value, nil
	}
	v, modRev, found, err := t.get(ek)
	if err != nil {
		return nil, err
	}
	if t.update {
		t.reads[ek] = modRev
	}
	if !found {
		return nil, fmt.Errorf("%q: %w", key, store.ErrNotFound)
	}
	return v, nil
}

func (t *tx) Put(key string, value []byte) error {
	if !t.update {
		return fmt.Errorf("put %q: %w", key, ErrReadOnly)
	}
	if key == "" {
		return errors.New("put: empty key")
	}
	t.writes[t.b.data+key] = write{value: append([]byte{}, value...)}
	return nil
}

func (t *tx) Delete(key string) error {
	if !t.update {
		return fmt.Errorf("delete %q: %w", key, ErrReadOnly)
	}
	if key == "" {
		return errors.New("delete: empty key")
	}
	t.writes[t.b.data+key] = write{del: true}
	return nil
}

type pending struct {
	key string
	w   write
}

// List reads the range at the snapshot page by page and, in an Update,
// merges the pending writes into it as they were when List was called.
func (t *tx) List(prefix string, fn func(string, []byte) error) error {
	start := t.b.data + prefix
	end := clientv3.GetPrefixRangeEnd(start)
	var pend []pending
	if t.update {
		if t.clock == nil {
			_, rev, _, err := t.get(t.b.clock)
			if err != nil {
				return err
			}
			t.clock = &rev
		}
		t.ranges = append(t.ranges, [2]string{start, end})
		for k, w := range t.writes {
			if k >= start && k < end {
				pend = append(pend, pending{k, w})
			}
		}
		slices.SortFunc(pend, func(a, b pending) int { return strings.Compare(a.key, b.key) })
	}
	emit := func(k string, v []byte) error { return fn(strings.TrimPrefix(k, t.b.data), v) }
	// flush emits the pending puts before key k (all of them when k is "").
	flush := func(k string) error {
		for len(pend) > 0 && (k == "" || pend[0].key < k) {
			p := pend[0]
			pend = pend[1:]
			if !p.w.del {
				if err := emit(p.key, p.w.value); err != nil {
					return err
				}
			}
		}
		return nil
	}
	from := start
	for {
		if t.failed != nil {
			return t.failed
		}
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
		if t.rev > 0 {
			opts = append(opts, clientv3.WithRev(t.rev))
		}
		ctx, cancel := t.b.rpcCtx(t.ctx)
		resp, err := t.b.cli.Get(ctx, from, opts...)
		cancel()
		if err != nil {
			return t.fail(t.readErr(err))
		}
		if t.rev == 0 {
			t.rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			k := string(kv.Key)
			if err := flush(k); err != nil {
				return err
			}
			if len(pend) > 0 && pend[0].key == k {
				p := pend[0]
				pend = pend[1:]
				if !p.w.del {
					if err := emit(k, p.w.value); err != nil {
						return err
					}
				}
				continue
			}
			v := kv.Value
			if v == nil {
				v = []byte{}
			}
			if err := emit(k, v); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	return flush("")
}

// commit sends the pending writes in one Txn guarded by what was read. It
// reports false, nil when a guard failed (a conflict).
func (t *tx) commit() (bool, error) {
	if len(t.writes) == 0 {
		return true, nil // nothing to write: the reads were one snapshot
	}
	var cmps []clientv3.Cmp
	size := 64
	for _, k := range slices.Sorted(maps.Keys(t.reads)) {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", t.reads[k]))
		size += len(k) + 16
	}
	for _, r := range t.ranges {
		// No key in the range was created or changed after the snapshot.
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(r[0]), "<", t.rev+1).WithRange(r[1]))
		size += len(r[0]) + len(r[1]) + 16
	}
	if t.clock != nil {
		// No key was deleted after the snapshot.
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(t.b.clock), "=", *t.clock))
		size += len(t.b.clock) + 16
	}
	var ops []clientv3.Op
	deletes := false
	for _, k := range slices.Sorted(maps.Keys(t.writes)) {
		w := t.writes[k]
		if w.del {
			ops = append(ops, clientv3.OpDelete(k))
			deletes = true
		} else {
			ops = append(ops, clientv3.OpPut(k, string(w.value)))
		}
		size += len(k) + len(w.value) + 16
	}
	if deletes {
		ops = append(ops, clientv3.OpPut(t.b.clock, ""))
	}
	limit := t.b.cfg.MaxTxnOps
	switch {
	case len(ops) > limit:
		return false, fmt.Errorf("etcd store: %w: the update writes %d keys, the limit is %d "+
			"(raise --max-txn-ops on every etcd member and max_txn_ops in Coffer's configuration)", ErrTooManyOps, len(ops), limit)
	case len(cmps) > limit:
		return false, fmt.Errorf("etcd store: %w: the update checks %d keys and ranges it read, the limit is %d "+
			"(raise --max-txn-ops on every etcd member and max_txn_ops in Coffer's configuration)", ErrTooManyOps, len(cmps), limit)
	case size > t.b.cfg.MaxRequestBytes:
		return false, fmt.Errorf("etcd store: %w: the update is about %d bytes, the limit is %d "+
			"(raise --max-request-bytes on every etcd member and max_request_bytes in Coffer's configuration)",
			ErrTooLarge, size, t.b.cfg.MaxRequestBytes)
	}
	ctx, cancel := t.b.rpcCtx(t.ctx)
	defer cancel()
	resp, err := t.b.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		if err := mapErr(err); errors.Is(err, ErrTooManyOps) || errors.Is(err, ErrTooLarge) {
			return false, fmt.Errorf("etcd store: commit: %w", err)
		}
		if ctxErr := t.ctx.Err(); ctxErr != nil {
			err = ctxErr
		} else {
			err = t.b.timeoutErr(err)
		}
		return false, fmt.Errorf("etcd store: commit (it may or may not have been applied): %w", err)
	}
	return resp.Succeeded, nil
}
