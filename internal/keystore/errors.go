package keystore

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Sentinel errors. Implementations wrap exactly one of the first six in an
// *Error; configuration and reference parsing use the last two.
var (
	// ErrNotFound: the item does not exist, or it (or its current version)
	// was deleted or destroyed.
	ErrNotFound = errors.New("not found")
	// ErrDisabled: the item exists but the upstream refuses to serve it
	// (disabled, scheduled for deletion).
	ErrDisabled = errors.New("disabled")
	// ErrAccessLost: the upstream rejected Coffer's credentials, or they no
	// longer grant access to the item.
	ErrAccessLost = errors.New("access denied")
	// ErrNoKey: the reference has #KEY and the item has no such key (or is
	// not a JSON object).
	ErrNoKey = errors.New("no such key")
	// ErrUnreachable: no definite answer: the upstream could not be reached,
	// timed out, was throttling, sealed, or answered in a way not understood.
	ErrUnreachable = errors.New("unreachable")
	// ErrTooLarge: the item's value is larger than the size cap.
	ErrTooLarge = errors.New("value too large")

	// ErrInvalidRef: a reference or item name is malformed.
	ErrInvalidRef = errors.New("invalid keystore reference")
	// ErrConfig: the keystores configuration is invalid.
	ErrConfig = errors.New("invalid keystore configuration")
)

// Gone reports whether err is a definite answer that the item cannot be
// served any more: not found, deleted, disabled, key missing, access lost,
// or no longer a valid item for its upstream (e.g. outside a narrowed allow
// list). Secrets linked to such an item are revoked from containers. Every
// other error (unreachable, too large, cancelled) keeps the last value.
func Gone(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrDisabled) ||
		errors.Is(err, ErrNoKey) || errors.Is(err, ErrAccessLost) || errors.Is(err, ErrInvalidRef)
}

// Error is the error type of every Keystore method: it names the upstream
// and the item (never a value) and wraps a sentinel.
type Error struct {
	Upstream string // configured upstream name
	Item     string // item name; "" for a failure of a whole Check
	Err      error  // wraps one of the sentinels
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("keystore ")
	b.WriteString(e.Upstream)
	if e.Item != "" {
		b.WriteString(": item ")
		b.WriteString(strconv.Quote(e.Item))
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error for upstream and item wrapping kind (one of the
// sentinels), with a message formatted from format and args. Arguments may
// be errors wrapped with %w, but never values.
func Errorf(upstream, item string, kind error, format string, args ...any) error {
	return &Error{Upstream: upstream, Item: item, Err: fmt.Errorf("%w: "+format, append([]any{kind}, args...)...)}
}

// Detail makes text from an upstream (an error message in a response body)
// safe to put in an error: at most 200 bytes of printable characters.
// Upstream error messages never carry values, but they may carry odd bytes.
func Detail(s string) string {
	const max = 200
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= max {
			b.WriteString("...")
			break
		}
		switch {
		case r == utf8.RuneError:
			b.WriteByte('?')
		case r == '\n' || r == '\r' || r == '\t':
			b.WriteByte(' ')
		case r < 0x20 || r == 0x7f:
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
	}
	return strings.TrimSpace(b.String())
}
