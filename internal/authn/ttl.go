package authn

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// ErrInvalidTTL is returned (wrapped) by ParseTTL.
var ErrInvalidTTL = errors.New("invalid ttl")

// Never is the TTL text for a token that does not expire. It must be said
// explicitly: a zero duration ("0s") is refused rather than read as "never".
const Never = "never"

// MaxTTL bounds a token's lifetime; longer is "never".
const MaxTTL = 100 * 365 * 24 * time.Hour

var ttlUnits = map[string]time.Duration{
	"w": 7 * 24 * time.Hour, "d": 24 * time.Hour, "h": time.Hour, "m": time.Minute, "s": time.Second,
	"ms": time.Millisecond, "us": time.Microsecond, "µs": time.Microsecond, "ns": time.Nanosecond,
}

// ParseTTL reads a token lifetime: a Go duration extended with days and
// weeks ("90m", "24h", "30d", "2w", "1w3d12h"), or "never", which returns 0
// (no expiry). Zero, negative and signed durations, and lifetimes over
// MaxTTL, are refused with a message saying what to write instead.
func ParseTTL(s string) (time.Duration, error) {
	if s == Never {
		return 0, nil
	}
	bad := func(why string) error { return fmt.Errorf("%w %q: %s", ErrInvalidTTL, s, why) }
	syntax := bad(`use a duration such as 30m, 24h, 30d or 2w, or "never"`)
	if s == "" || len(s) > 64 {
		return 0, syntax
	}
	var total time.Duration
	for rest := s; rest != ""; {
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		num := rest[:i]
		j := i
		for j < len(rest) && !(rest[j] >= '0' && rest[j] <= '9' || rest[j] == '.') {
			j++
		}
		unit, ok := ttlUnits[rest[i:j]]
		if num == "" || strings.Count(num, ".") > 1 || num[0] == '.' || num[len(num)-1] == '.' || !ok {
			return 0, syntax
		}
		// time.ParseDuration does the exact decimal arithmetic; days and
		// weeks are counted in hours and scaled.
		base, err := time.ParseDuration(num + "ns")
		if unit != time.Nanosecond {
			base, err = time.ParseDuration(num + "h")
		}
		if err != nil {
			return 0, bad("too long; use \"never\" for a token that does not expire")
		}
		var d time.Duration
		switch {
		case unit == time.Nanosecond:
			d = base
		case unit >= time.Hour:
			mult := unit / time.Hour
			if base > time.Duration(math.MaxInt64)/mult {
				return 0, bad("too long; use \"never\" for a token that does not expire")
			}
			d = base * mult
		default:
			// base is num hours; num units is base / (hour/unit), exactly
			// for whole numbers and to the nanosecond otherwise.
			d = base / (time.Hour / unit)
		}
		if total > MaxTTL || d > MaxTTL {
			return 0, bad("too long; use \"never\" for a token that does not expire")
		}
		total += d
		rest = rest[j:]
	}
	switch {
	case total <= 0:
		return 0, bad(`a token's lifetime must be positive; use "never" for a token that does not expire`)
	case total > MaxTTL:
		return 0, bad("too long; use \"never\" for a token that does not expire")
	}
	return total, nil
}
