// Package etcd is the store.Backend for several Coffer servers: an etcd
// cluster, reached with the official client (go.etcd.io/etcd/client/v3).
//
// # Layout
//
// Every key lives under "<prefix>/" (Config.Prefix, default "coffer"):
// the caller's keys under "<prefix>/d/", the backend's own bookkeeping under
// "<prefix>/m/". A prefix holds no '/', so "a" and "ab" never see each
// other's keys. Values are stored exactly as the caller gives them: Coffer
// gives ciphertext (sealed envelopes) and metadata, never a plaintext value.
//
// # Transactions
//
// View reads at one revision of the cluster: the first read fixes it, the
// others ask for it (WithRev), so fn sees one consistent snapshot.
//
// Update is optimistic. fn reads at one revision too, and its writes go to a
// buffer (later reads in fn see them). The buffer records, for every key
// read, the mod revision seen (0 for a key that did not exist), and for
// every List the prefix's range. The writes are then committed in one etcd
// Txn guarded by those facts: every key read still has the mod revision
// seen; no key in a listed range has changed since the snapshot (its mod
// revision is not newer); and no key has been deleted since (every Update
// that deletes also bumps the key "<prefix>/m/deletes", which an Update
// that listed compares too). If a guard fails, another writer got in
// between: fn runs again on a fresh snapshot, up to Config.MaxRetries times,
// then Update fails with ErrConflict. Updates are thus serializable, as they
// are on bbolt, as long as every writer of the prefix is this backend.
//
// fn may therefore run more than once and must have no effect outside the
// transaction until Update returns nil. A read that fails poisons the
// transaction: Update returns that error even if fn ignored it, and
// commits nothing.
//
// # Limits
//
// One Update is one etcd Txn, so it must fit etcd's limits: at most
// --max-txn-ops writes and at most as many reads (Config.MaxTxnOps, default
// 128), and at most --max-request-bytes in all (Config.MaxRequestBytes,
// default 1.5 MiB). An Update over either limit fails with ErrTooManyOps or
// ErrTooLarge and writes nothing; the limits are checked before sending and
// the server's own refusal maps to the same errors. Raise the etcd flags on
// every member and the Config fields together.
//
// The outcome of an Update whose commit request fails in transit (a
// timeout, a lost connection) is unknown, as with any networked database:
// it may have been applied.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"coffer/internal/store"
)

var (
	// ErrUnavailable is returned (wrapped) by Open when the cluster does not
	// answer within Config.DialTimeout: wrong or unreachable endpoints, TLS
	// refused, no quorum. The message names the endpoints and the cause.
	ErrUnavailable = errors.New("etcd is unavailable")
	// ErrDenied is returned (wrapped) by Open when etcd answers but refuses
	// access to the prefix (etcd's auth is on and the user of the client
	// certificate has no readwrite role on "<prefix>/").
	ErrDenied = errors.New("etcd denied access")
	// ErrConflict is returned (wrapped) by Update when concurrent writers
	// kept invalidating its reads Config.MaxRetries times in a row.
	ErrConflict = errors.New("update kept conflicting with concurrent updates")
	// ErrTooManyOps is returned (wrapped) by Update when it writes or reads
	// more keys than one etcd transaction may hold (etcd's --max-txn-ops).
	ErrTooManyOps = errors.New("update exceeds etcd's operations per transaction (--max-txn-ops)")
	// ErrTooLarge is returned (wrapped) by Update when its writes exceed
	// etcd's request size limit (--max-request-bytes).
	ErrTooLarge = errors.New("update exceeds etcd's request size (--max-request-bytes)")
	// ErrReadOnly is returned (wrapped) by Put and Delete inside View.
	ErrReadOnly = errors.New("read-only transaction")
)

// Backend is an etcd-backed store.Backend. It is safe for concurrent use.
type Backend struct {
	cli   *clientv3.Client
	cfg   Config
	root  string // "<prefix>/"
	data  string // "<prefix>/d/": the caller's keys
	clock string // "<prefix>/m/deletes": bumped by every Update that deletes
}

var _ store.Backend = (*Backend)(nil)

// Open connects to the etcd cluster in cfg and checks, within
// cfg.DialTimeout, that it answers a quorum read. It writes nothing. A
// configuration it refuses gives an error wrapping ErrConfig that names
// the field; a cluster that does not answer gives one wrapping
// ErrUnavailable that names the endpoints.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	cfg = cfg.withDefaults()
	secure, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	cc := clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    30 * time.Second,
		DialKeepAliveTimeout: 10 * time.Second,
		// Above the server's limit, so that the server, which knows
		// it, is the one to refuse (with a clear error); Update checks
		// first anyway.
		MaxCallSendMsgSize: cfg.MaxRequestBytes + 512<<10,
		Logger:             zapToSlog(cfg.Logger),
	}
	if secure {
		if cc.TLS, err = cfg.tlsConfig(); err != nil {
			return nil, err
		}
		if cfg.CertFile == "" {
			cfg.Logger.Warn("etcd store: no client certificate (cert_file, key_file); the etcd cluster must authenticate Coffer some other way")
		}
	}
	eps := strings.Join(cfg.Endpoints, ",")
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	var bad []string
	errs, hints := preflight(pctx, cfg.Endpoints, cc.TLS)
	for i, err := range errs {
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", cfg.Endpoints[i], err))
		}
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("etcd store %s: %w", eps, ctx.Err())
	}
	if len(bad) == len(cfg.Endpoints) {
		return nil, fmt.Errorf("etcd store: %w: %s", ErrUnavailable, strings.Join(bad, "; "))
	}
	for _, e := range bad {
		cfg.Logger.Warn("etcd store: endpoint unusable, trying the others", "error", e)
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd store %s: %w: %v", eps, ErrUnavailable, err)
	}
	b := &Backend{cli: cli, cfg: cfg, root: cfg.Prefix + "/"}
	b.data, b.clock = b.root+"d/", b.root+"m/deletes"
	// A quorum read: the cluster is there, has a leader and lets us in.
	if _, err := cli.Get(pctx, b.clock); err != nil {
		cli.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("etcd store %s: %w", eps, ctx.Err())
		}
		if isDenied(err) {
			return nil, fmt.Errorf("etcd store %s: %w to %q: %v (give the etcd user of cert_file a role with readwrite on prefix %q)",
				eps, ErrDenied, b.root, err, b.root)
		}
		for _, h := range hints {
			if h != "" {
				bad = append(bad, h)
			}
		}
		detail := ""
		if len(bad) > 0 {
			detail = " (" + strings.Join(bad, "; ") + ")"
		}
		what := "first read failed"
		if errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded {
			what = "no answer within " + cfg.DialTimeout.String()
		}
		return nil, fmt.Errorf("etcd store %s: %w: %s: %v%s", eps, ErrUnavailable, what, cause(err), detail)
	}
	return b, nil
}

func isDenied(err error) bool {
	for _, e := range []error{rpctypes.ErrPermissionDenied, rpctypes.ErrUserEmpty, rpctypes.ErrAuthFailed,
		rpctypes.ErrUserNotFound, rpctypes.ErrInvalidAuthToken, rpctypes.ErrAuthOldRevision} {
		if errors.Is(err, e) {
			return true
		}
	}
	return status.Code(err) == codes.PermissionDenied || status.Code(err) == codes.Unauthenticated
}

// cause simplifies the gRPC errors of a failed first contact.
func cause(err error) error {
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return fmt.Errorf("%s: %s", s.Code(), s.Message())
	}
	return err
}

// Client returns the etcd client, for features built on the same cluster
// and connection (watches, leader election). They must keep out of
// "<prefix>/d/" and "<prefix>/m/"; see Root.
func (b *Backend) Client() *clientv3.Client { return b.cli }

// Root returns "<prefix>/", the part of etcd's key space this installation
// owns.
func (b *Backend) Root() string { return b.root }

// Close implements store.Backend.
func (b *Backend) Close() error { return b.cli.Close() }

// View implements store.Backend.
func (b *Backend) View(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := &tx{b: b, ctx: ctx}
	err := fn(t)
	if err == nil && t.failed != nil {
		err = t.failed
	}
	return err
}

// Update implements store.Backend; see the package documentation.
func (b *Backend) Update(ctx context.Context, fn func(store.Tx) error) error {
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		t := &tx{b: b, ctx: ctx, update: true, reads: map[string]int64{}, writes: map[string]write{}}
		err := fn(t)
		switch {
		case t.failed != nil && errors.Is(t.failed, rpctypes.ErrCompacted):
			// The snapshot was compacted away under fn: a conflict.
		case t.failed != nil:
			if err != nil && errors.Is(err, t.failed) {
				return err
			}
			return t.failed
		case err != nil:
			return err
		default:
			ok, err := t.commit()
			if err != nil || ok {
				return err
			}
		}
		if attempt >= b.cfg.MaxRetries {
			return fmt.Errorf("etcd store: %w: gave up after %d attempts", ErrConflict, attempt)
		}
		// Back off exponentially with full jitter, so that colliding
		// writers part: up to 2ms, 4ms, 8ms... then at most 200ms.
		d := time.Duration(rand.Int64N(int64(min(time.Millisecond<<min(attempt, 8), 200*time.Millisecond))))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
}

// rpcCtx bounds one request by RequestTimeout on top of the caller's ctx.
func (b *Backend) rpcCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.cfg.RequestTimeout)
}

// timeoutErr says which timeout expired when a request ran out of
// RequestTimeout (the caller's context being still alive), and marks the
// errors of a cluster that cannot serve with store.ErrUnavailable.
func (b *Backend) timeoutErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded {
		return fmt.Errorf("%w: no answer from etcd (%s) within request_timeout %s: %w",
			store.ErrUnavailable, strings.Join(b.cfg.Endpoints, ","), b.cfg.RequestTimeout, err)
	}
	if isUnavailable(err) {
		return fmt.Errorf("%w: etcd (%s): %w", store.ErrUnavailable, strings.Join(b.cfg.Endpoints, ","), err)
	}
	return err
}

// mapErr turns the server's refusals of a too big transaction into this
// package's errors.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rpctypes.ErrTooManyOps):
		return fmt.Errorf("%w: the etcd server refused the transaction: %v", ErrTooManyOps, err)
	case errors.Is(err, rpctypes.ErrRequestTooLarge), status.Code(err) == codes.ResourceExhausted:
		return fmt.Errorf("%w: the etcd server refused the transaction: %v", ErrTooLarge, err)
	}
	return err
}
