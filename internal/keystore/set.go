package keystore

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Set is the configured upstreams by name: what the server holds once it
// has opened its keystores section.
type Set map[string]Keystore

// ParseRef parses s (see ParseRef) and checks that its upstream is
// configured and its item well-formed for that upstream. Errors wrap
// ErrInvalidRef and name what is wrong.
func (s Set) ParseRef(str string) (Ref, error) {
	r, err := ParseRef(str)
	if err != nil {
		return Ref{}, err
	}
	ks, ok := s[r.Upstream]
	if !ok {
		names := slices.Sorted(maps.Keys(s))
		if len(names) == 0 {
			return Ref{}, fmt.Errorf("%w: upstream %q is not configured (the server's configuration has no keystores)", ErrInvalidRef, r.Upstream)
		}
		return Ref{}, fmt.Errorf("%w: upstream %q is not configured (configured: %s)", ErrInvalidRef, r.Upstream, strings.Join(names, ", "))
	}
	if err := ks.ValidateItem(r.Item); err != nil {
		return Ref{}, err
	}
	return r, nil
}

// Close closes every upstream.
func (s Set) Close() error {
	var errs []error
	for _, ks := range s {
		errs = append(errs, ks.Close())
	}
	return errors.Join(errs...)
}
