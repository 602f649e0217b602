package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"coffer/internal/api"
	"coffer/internal/broker"
	"coffer/internal/fleet"
	"coffer/internal/store"
)

// Presence on a shared store (etcd): each server publishes the agents
// connected to it, with their containers' rollout state (names and
// version numbers, never a value), under one etcd key per agent,
// "<prefix>/live/agents/<server id>/<agent>", all attached to one lease
// of the server's, kept alive while it runs. Any server's rollout status
// and agent ls merge them with its own broker's view (api.Cluster).
//
//   - Bounded writes: every presenceEvery the agents the broker marked as
//     changed (all of them every presenceFullEvery rounds) are compared
//     with what was last written, and only those whose record changed are
//     written, in transactions of at most presenceTxnOps keys
//     (and presenceTxnBytes) and at most presenceMaxWrites keys a round;
//     a record over presenceMaxRecord is published without its containers
//     (their count only), so that no agent can crowd out the others. A
//     rotation costs each server one write per agent it serves, however
//     many containers and however many rotations within a round.
//   - Gone with the server: a server killed stops renewing its lease, and
//     etcd deletes its records presenceTTL later; a server shut down
//     revokes its lease at once. A server whose lease lapsed (etcd away
//     longer than the lease) takes a new one and writes everything again.
const (
	presenceDir       = "live/agents/"
	presenceTTL       = 3 // seconds
	presenceEvery     = 500 * time.Millisecond
	presenceFullEvery = 10 // rounds: every agent is compared every 5 s
	presenceTxnOps    = 100
	presenceMaxWrites = 1000
	presenceMaxRecord = 256 << 10   // bytes; a larger record goes without its containers
	presenceTxnBytes  = 512 << 10   // bytes a transaction, well inside etcd's 1.5 MiB request limit
	presenceDefer     = time.Second // longest wait for a rollout to settle before a round
)

var _ api.Cluster = (*presence)(nil)

// presence publishes this server's agents and reads the others'.
type presence struct {
	cli    *clientv3.Client
	dir    string // Root()+presenceDir
	self   string // this server's id
	addr   string // this server's advertised address
	broker *broker.Broker
	fleet  *fleet.Fleet
	log    *slog.Logger
	txnOps int
	// timeout bounds each etcd request.
	timeout time.Duration
	// every and ttl are presenceEvery and presenceTTL; tests shorten them.
	every time.Duration
	ttl   int64
	// failing is set from the first failure to the next success (one
	// warning an outage); only run's goroutine uses it.
	failing bool
}

// failed logs the first of a run of failures.
func (p *presence) failed(what string, err error) {
	if !p.failing {
		p.failing = true
		p.log.Warn("presence: cannot publish this server's agents; the other servers do not see them until it can", "step", what, "err", err)
	}
}

func newPresence(cli *clientv3.Client, root, self, addr string, b *broker.Broker, fl *fleet.Fleet, maxTxnOps int, timeout time.Duration, log *slog.Logger) *presence {
	ops := presenceTxnOps
	if maxTxnOps > 0 && maxTxnOps < ops {
		ops = maxTxnOps
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &presence{cli: cli, dir: root + presenceDir, self: self, addr: addr, broker: b, fleet: fl, log: log, txnOps: ops,
		timeout: timeout, every: presenceEvery, ttl: presenceTTL}
}

// Self implements api.Cluster.
func (p *presence) Self() string { return p.addr }

// Remote implements api.Cluster: one range read of every server's
// records. Of two records of one agent (it moved from a server that died
// to another, whose record is newer), the newest wins.
func (p *presence) Remote(ctx context.Context) (map[string]broker.AgentPresence, error) {
	rctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	resp, err := p.cli.Get(rctx, p.dir, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("%w: read the servers' agents from etcd: %v", store.ErrUnavailable, err)
	}
	out := map[string]broker.AgentPresence{}
	newest := map[string][2]int64{}
	for _, kv := range resp.Kvs {
		server, agent, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), p.dir), "/")
		if !ok || server == p.self || agent == "" {
			continue
		}
		if n, seen := newest[agent]; seen && (kv.CreateRevision < n[0] || kv.CreateRevision == n[0] && kv.ModRevision < n[1]) {
			continue
		}
		var ap broker.AgentPresence
		if err := json.Unmarshal(kv.Value, &ap); err != nil {
			p.log.Warn("presence: a server's record of an agent does not parse; ignored", "server", server, "agent", agent, "err", err)
			continue
		}
		out[agent] = ap
		newest[agent] = [2]int64{kv.CreateRevision, kv.ModRevision}
	}
	return out, nil
}

// run publishes until ctx ends, then revokes the lease (the records go at
// once).
func (p *presence) run(ctx context.Context) {
	wait := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for ctx.Err() == nil {
		gctx, cancel := context.WithTimeout(ctx, p.timeout)
		lease, err := p.cli.Grant(gctx, p.ttl)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				p.failed("take a lease", err)
			}
			if !wait(time.Second) {
				return
			}
			continue
		}
		p.publish(ctx, lease.ID)
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = p.cli.Revoke(rctx, lease.ID) // gone already if it lapsed
		cancel()
		if !wait(p.every) {
			return
		}
	}
}

// publish writes this server's agents under lease until ctx ends or the
// lease is lost.
func (p *presence) publish(ctx context.Context, lease clientv3.LeaseID) {
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ka, err := p.cli.KeepAlive(kctx, lease)
	if err != nil {
		return
	}
	written := map[string]broker.AgentPresence{} // what etcd holds under this lease
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	// Each round writes the agents whose state changed since the last
	// one; every presenceFullEvery rounds (and on a new lease) every agent
	// is compared, in case a change went unmarked.
	round := 0
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ka:
			if !ok {
				if ctx.Err() == nil {
					p.log.Warn("presence: the lease on this server's agents lapsed (etcd away?); publishing them again")
				}
				return
			}
		case <-tick.C:
			// A rollout under way is published once it has settled
			// (broker.WaitSettled).
			p.broker.WaitSettled(presenceDefer)
			full := round%presenceFullEvery == 0
			round++
			more, err := p.flush(ctx, lease, written, full)
			if more || err != nil {
				round = 0 // compare everything next round
			}
			if err != nil && ctx.Err() == nil {
				p.failed("write", err)
			} else if err == nil && p.failing {
				p.failing = false
				p.log.Info("presence: this server's agents are published again")
			}
		}
	}
}

// flush writes the agents whose record changed since the last flush and
// deletes those no longer connected here: those the broker says may have
// changed, or with full all of them.
func (p *presence) flush(ctx context.Context, lease clientv3.LeaseID, written map[string]broker.AgentPresence, full bool) (more bool, err error) {
	now, gone := p.broker.PresenceChanges(full)
	type write struct {
		name string
		op   clientv3.Op
		size int
		rec  *broker.AgentPresence // nil: a deletion
	}
	var ws []write
	for name, ap := range now {
		if len(ws) >= presenceMaxWrites {
			break // the rest next round
		}
		ap.Server, ap.Address = p.addr, p.fleet.Address(name)
		old, had := written[name]
		if had && old.Equal(ap) {
			continue
		}
		b, err := json.Marshal(ap)
		if err != nil {
			return false, err
		}
		if len(b) > presenceMaxRecord {
			// Thousands of containers, or an agent reporting huge names:
			// published without its containers, so that it cannot crowd
			// the others out of a transaction.
			ap = broker.AgentPresence{Server: ap.Server, Address: ap.Address, Omitted: len(ap.Containers)}
			if had && old.Equal(ap) {
				continue
			}
			if !had || old.Omitted == 0 {
				p.log.Warn("presence: the agent's record is too large to publish; the other servers see it without its containers", "agent", name, "bytes", len(b), "containers", ap.Omitted)
			}
			if b, err = json.Marshal(ap); err != nil {
				return false, err
			}
		}
		key := p.dir + p.self + "/" + name
		ws = append(ws, write{name, clientv3.OpPut(key, string(b), clientv3.WithLease(lease)), len(key) + len(b), &ap})
	}
	del := func(name string) {
		key := p.dir + p.self + "/" + name
		ws = append(ws, write{name, clientv3.OpDelete(key), len(key), nil})
	}
	if full {
		for name := range written {
			if _, ok := now[name]; !ok && len(ws) < presenceMaxWrites {
				del(name)
			}
		}
	}
	for _, name := range gone {
		if _, ok := written[name]; ok && len(ws) < presenceMaxWrites {
			del(name)
		}
	}
	more = len(ws) >= presenceMaxWrites // the rest on the next round, a full one
	for len(ws) > 0 {
		n, size := 0, 0
		for n < len(ws) && n < p.txnOps && (n == 0 || size+ws[n].size <= presenceTxnBytes) {
			size += ws[n].size
			n++
		}
		ops := make([]clientv3.Op, n)
		for i := range n {
			ops[i] = ws[i].op
		}
		rctx, cancel := context.WithTimeout(ctx, p.timeout)
		_, err := p.cli.Txn(rctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return false, err
		}
		for _, w := range ws[:n] {
			if w.rec == nil {
				delete(written, w.name)
			} else {
				written[w.name] = *w.rec
			}
		}
		ws = ws[n:]
	}
	return more, nil
}
