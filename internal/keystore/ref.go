package keystore

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on references, in bytes.
const (
	MaxUpstreamLen = 63
	MaxItemLen     = 2048 // AWS ARNs and Vault paths can be long
	MaxKeyLen      = 256
)

// Ref is a link to an upstream item: UPSTREAM:ITEM[#KEY].
type Ref struct {
	Upstream string // configured upstream name, e.g. "vault"
	Item     string // item in the upstream's terms, e.g. "payments/db"
	Key      string // optional key of a JSON-shaped item, e.g. "password"
}

// String returns the reference in the form ParseRef reads.
func (r Ref) String() string {
	if r.Key == "" {
		return r.Upstream + ":" + r.Item
	}
	return r.Upstream + ":" + r.Item + "#" + r.Key
}

var upstreamPattern = regexp.MustCompile(`^[a-z]([a-z0-9-]*[a-z0-9])?$`)

// ValidateUpstreamName reports whether name can name an upstream: lower-case
// letters, digits and '-', starting with a letter, at most 63 bytes.
func ValidateUpstreamName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: upstream name is empty", ErrInvalidRef)
	case len(name) > MaxUpstreamLen:
		return fmt.Errorf("%w: upstream name is longer than %d bytes", ErrInvalidRef, MaxUpstreamLen)
	case !upstreamPattern.MatchString(name):
		return fmt.Errorf("%w: upstream name %s: use lower-case letters, digits and '-', starting with a letter",
			ErrInvalidRef, quoteShort(name))
	}
	return nil
}

// ParseRef parses UPSTREAM:ITEM[#KEY]. UPSTREAM is an upstream name (see
// ValidateUpstreamName); the first ':' ends it, so ITEM may contain ':' (AWS
// ARNs do). ITEM may not contain '#'; the first '#' starts KEY. ITEM and KEY
// are valid UTF-8 without control characters; ITEM has no white space.
// Whether ITEM is well-formed for its upstream is for the upstream's
// Keystore.ValidateItem to say. Errors wrap ErrInvalidRef.
func ParseRef(s string) (Ref, error) {
	if s == "" {
		return Ref{}, fmt.Errorf("%w: empty (want UPSTREAM:ITEM[#KEY], e.g. vault:payments/db#password)", ErrInvalidRef)
	}
	if max := MaxUpstreamLen + 1 + MaxItemLen + 1 + MaxKeyLen; len(s) > max {
		return Ref{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalidRef, max)
	}
	if !utf8.ValidString(s) {
		return Ref{}, fmt.Errorf("%w: not valid UTF-8", ErrInvalidRef)
	}
	up, rest, ok := strings.Cut(s, ":")
	if !ok {
		return Ref{}, fmt.Errorf("%w: %s has no ':' between upstream and item (want UPSTREAM:ITEM[#KEY])",
			ErrInvalidRef, quoteShort(s))
	}
	if err := ValidateUpstreamName(up); err != nil {
		return Ref{}, fmt.Errorf("%w (in %s)", err, quoteShort(s))
	}
	item, key, hasKey := strings.Cut(rest, "#")
	if err := validateItem(item); err != nil {
		return Ref{}, err
	}
	if hasKey {
		if err := validateKey(key); err != nil {
			return Ref{}, err
		}
	}
	return Ref{Upstream: up, Item: item, Key: key}, nil
}

func validateItem(item string) error {
	switch {
	case item == "":
		return fmt.Errorf("%w: item is empty (want UPSTREAM:ITEM[#KEY])", ErrInvalidRef)
	case len(item) > MaxItemLen:
		return fmt.Errorf("%w: item is longer than %d bytes", ErrInvalidRef, MaxItemLen)
	}
	for i, r := range item {
		if r == ' ' || !unicode.IsPrint(r) { // IsPrint: no control or format characters, no space but ' '
			return fmt.Errorf("%w: item has a space or control character at byte %d", ErrInvalidRef, i)
		}
	}
	return nil
}

func validateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: key after '#' is empty (drop the '#' to use the whole item)", ErrInvalidRef)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: key is longer than %d bytes", ErrInvalidRef, MaxKeyLen)
	case strings.Contains(key, "#"):
		return fmt.Errorf("%w: more than one '#' (the item may not contain '#')", ErrInvalidRef)
	}
	for i, r := range key {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: key has a control character at byte %d", ErrInvalidRef, i)
		}
	}
	return nil
}

// quoteShort quotes s for an error message, cut to 80 bytes.
func quoteShort(s string) string {
	const max = 80 // bytes of the quoted text, escapes included
	if q := strconv.Quote(s); len(q) <= max+2 {
		return q
	}
	cut := min(len(s), max)
	for cut > 0 && ((cut < len(s) && !utf8.RuneStart(s[cut])) || len(strconv.Quote(s[:cut])) > max+2) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}
