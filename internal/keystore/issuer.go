package keystore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"coffer/internal/secret"
)

// Issuer is an upstream that issues credentials on request instead of
// storing items: Vault's database secrets engine (database/creds/ROLE)
// makes a new database user for each request, under a lease that Coffer
// renews while the credentials are in use and revokes when they are not.
// Coffer gives every container its own lease (package lease).
//
// It is a capability of its own, not a Keystore: an issued item has no
// current version to read or check. Errors are *Error values naming the
// upstream and the item (the issuing path), wrapping the same sentinels as
// a Keystore's, and never contain a credential or a lease's data.
type Issuer interface {
	// ValidateItem reports whether item is a well-formed issuing path in
	// this upstream's terms. It does no I/O. Errors wrap ErrInvalidRef.
	ValidateItem(item string) error

	// Issue asks the upstream for new credentials at item. The caller owns
	// Lease.Value and zeroes it. An answer without a lease (item is not an
	// issuing endpoint) is an error wrapping ErrInvalidRef.
	Issue(ctx context.Context, item string) (Lease, error)

	// Renew extends the lease by about increment and returns its new TTL
	// (the upstream may cap it at the lease's maximum). A lease that no
	// longer exists or cannot be renewed fails with ErrNotFound.
	Renew(ctx context.Context, leaseID string, increment time.Duration) (time.Duration, error)

	// Revoke ends the lease at once (the upstream deletes the
	// credentials). Revoking a lease that is already gone succeeds.
	Revoke(ctx context.Context, leaseID string) error

	// Close releases the client's connections and credentials.
	Close() error
}

// Lease is one issue of credentials.
type Lease struct {
	ID        string        // the upstream's lease id: not a credential, safe to audit
	TTL       time.Duration // how long the credentials live unless renewed
	Renewable bool
	// Value is the credentials as one JSON object, keys sorted (e.g.
	// {"password":"...","username":"..."}); #KEY picks one.
	Value secret.Value
}

// IssuerConfig is implemented by the UpstreamConfig of issuing upstream
// types (type vault-dynamic). Such an upstream is opened with OpenIssuer,
// never with Open, and is not part of a Set.
type IssuerConfig interface {
	UpstreamConfig
	OpenIssuer(opts Options) (Issuer, error)
}

// IsIssuer reports whether u is an issuing upstream.
func (u Upstream) IsIssuer() bool {
	_, ok := u.Config.(IssuerConfig)
	return ok
}

// OpenIssuer builds an issuing upstream with its common settings,
// restricted to its allow list.
func (u Upstream) OpenIssuer(opts Options) (Issuer, error) {
	ic, ok := u.Config.(IssuerConfig)
	if !ok {
		return nil, fmt.Errorf("%w: keystores.%s: type %s does not issue credentials", ErrConfig, u.Name, u.Type)
	}
	opts.Name, opts.MaxValueSize, opts.Timeout = u.Name, u.MaxValueSize, u.Timeout
	if opts.Logger != nil {
		opts.Logger = opts.Logger.With("upstream", u.Name, "type", u.Type)
	}
	is, err := ic.OpenIssuer(opts)
	if err != nil {
		return nil, err
	}
	if len(u.Allow) == 0 {
		return is, nil
	}
	return &restrictedIssuer{Issuer: is, name: u.Name, patterns: u.Allow}, nil
}

// Issuers is the configured issuing upstreams by name.
type Issuers map[string]Issuer

// ParseRef parses a reference whose upstream is one of s and checks its
// item. Errors wrap ErrInvalidRef.
func (s Issuers) ParseRef(str string) (Ref, Issuer, error) {
	r, err := ParseRef(str)
	if err != nil {
		return Ref{}, nil, err
	}
	is, ok := s[r.Upstream]
	if !ok {
		names := slices.Sorted(maps.Keys(s))
		return Ref{}, nil, fmt.Errorf("%w: upstream %q is not configured as an upstream that issues credentials (configured: %s)",
			ErrInvalidRef, r.Upstream, strings.Join(names, ", "))
	}
	if err := is.ValidateItem(r.Item); err != nil {
		var ke *Error
		if errors.As(err, &ke) {
			return Ref{}, nil, err
		}
		return Ref{}, nil, &Error{Upstream: r.Upstream, Item: r.Item, Err: err}
	}
	return r, is, nil
}

// Has reports whether str's upstream is one of s (nothing else is checked).
func (s Issuers) Has(str string) bool {
	up, _, ok := strings.Cut(str, ":")
	_, is := s[up]
	return ok && is
}

// Close closes every issuer.
func (s Issuers) Close() error {
	for _, is := range s {
		is.Close()
	}
	return nil
}

type restrictedIssuer struct {
	Issuer
	name     string
	patterns []string
}

func (r *restrictedIssuer) ValidateItem(item string) error {
	rk := restricted{name: r.name, patterns: r.patterns}
	if !rk.allowed(item) {
		return rk.refuse(item)
	}
	return r.Issuer.ValidateItem(item)
}

func (r *restrictedIssuer) Issue(ctx context.Context, item string) (Lease, error) {
	if err := r.ValidateItem(item); err != nil {
		return Lease{}, err
	}
	return r.Issuer.Issue(ctx, item)
}
