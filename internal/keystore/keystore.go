// Package keystore is the seam between Coffer and the keystores teams already
// run (HashiCorp Vault, AWS Secrets Manager, Azure Key Vault, CyberArk Conjur
// and the CyberArk Central Credential Provider): a Coffer secret may be linked
// to an upstream item instead of being stored by Coffer.
//
// A link is written UPSTREAM:ITEM[#KEY] (see [ParseRef]): UPSTREAM names an
// upstream configured in the server's YAML (see [DecodeConfig]), ITEM is in
// that upstream's own terms, and #KEY picks one key of a JSON-shaped item
// (see [Pick]).
//
// # The seam
//
// [Keystore] has four methods: validate an item name, read an item's current
// version and value, check the current versions of many items as cheaply as
// the upstream allows, and close. Upstreams that can tell Coffer of a change
// before the next poll also implement [Hinter]. Every implementation lives in
// its own sub-package and passes the conformance suite in keystoretest; the
// list of implementations that coffer-server links is explicit (package
// keystore/builtin), with no init-time registration.
//
// # Errors
//
// Every error names the upstream and the item ([Error]) and wraps one of the
// sentinels below; none ever contains a value. [Gone] tells the two outcomes
// apart that matter to the broker: a definite answer that the item cannot be
// served any more (not found, deleted, disabled, key missing, access lost:
// the secret is revoked from containers), or anything else (unreachable,
// throttled, too large: containers keep the last value and the link is
// reported degraded).
//
// # Concurrency
//
// Implementations are safe for concurrent use. Read and Check honour the
// context's deadline and cancellation; a cancelled call never reports an
// item gone.
package keystore

import (
	"context"
	"log/slog"
	"time"

	"golang.org/x/time/rate"

	"coffer/internal/secret"
)

// Keystore is one configured upstream keystore.
type Keystore interface {
	// ValidateItem reports whether item is a well-formed item name in this
	// upstream's terms (a Vault path, an AWS secret name or ARN, ...). It
	// does no I/O. Errors wrap ErrInvalidRef and say what is expected.
	ValidateItem(item string) error

	// Read returns the item's current version and its whole value. The
	// caller owns Item.Value and zeroes it when done. Values larger than the
	// upstream's size cap fail with ErrTooLarge.
	Read(ctx context.Context, item string) (Item, error)

	// Check returns the current version of each of items, reading as few
	// values as the upstream allows (metadata or listings where it has
	// them). With a nil error the map has an entry for every item, whose
	// State.Err is nil or wraps one of the sentinels. A non-nil error means
	// that no item could be checked (ErrUnreachable, ErrAccessLost).
	// State.Version equals Item.Version of a Read when the item has not
	// changed in between.
	Check(ctx context.Context, items []string) (map[string]State, error)

	// Close releases the client's connections and credentials.
	Close() error
}

// Hinter is an optional capability of upstreams that can tell Coffer that
// items may have changed before the next poll (a push feed, a webhook). A
// hint is only a hint: the receiver runs Check for the named items (all
// linked items if the slice is empty) and trusts only its answer.
type Hinter interface {
	// Hints returns a channel that carries item names. It is closed by
	// Close.
	Hints() <-chan []string
}

// Item is an item's value at one version.
type Item struct {
	// Version identifies the value in the upstream's own terms (a Vault
	// KV version number, an AWS VersionId, ...). It is opaque and never
	// derived from the value in a way that reveals it.
	Version string
	// Value is the whole item, or one key's value after Pick.
	Value secret.Value
}

// State is what a Check learned about one item.
type State struct {
	Version string // current version; "" when Err is set
	Err     error  // nil, or an *Error wrapping a sentinel
}

// Options are what every upstream gets from the server besides its own
// configuration section.
type Options struct {
	// Name is the upstream's configured name, used in every error.
	Name string
	// MaxValueSize is the largest item value accepted, in bytes; larger
	// values fail with ErrTooLarge. Zero means DefaultMaxValueSize.
	MaxValueSize int
	// Timeout bounds each request to the upstream. Zero means
	// DefaultTimeout.
	Timeout time.Duration
	// Logger receives operational messages (never values). Nil means
	// slog.Default().
	Logger *slog.Logger
	// Limiter, if set, paces every request to the upstream (the
	// keystores' common key max_requests_per_second); nil means no limit.
	Limiter *rate.Limiter
	// HashKey keys the content hashes that stand for versions where an
	// upstream has none (CyberArk CCP), so that a version never reveals a
	// value. Nil means a random key per process (every item then looks
	// changed once after a restart).
	HashKey []byte
}

// Defaults for Options.
const (
	DefaultMaxValueSize = 1 << 20
	DefaultTimeout      = 10 * time.Second
)

// WithDefaults returns o with zero fields set to their defaults.
func (o Options) WithDefaults() Options {
	if o.MaxValueSize <= 0 {
		o.MaxValueSize = DefaultMaxValueSize
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// BodyLimit is the most bytes an implementation reads from one upstream
// response: room for a value of MaxValueSize bytes with the worst JSON
// escaping (6 bytes per byte), plus metadata and listings. It guards memory;
// the exact cap is checked on the decoded value.
func (o Options) BodyLimit() int64 {
	return 6*int64(o.WithDefaults().MaxValueSize) + 8<<20
}
