package policy

import (
	"fmt"
	"strings"
)

// ParseMode parses a file mode for a binding as people write it: octal
// digits with an optional "0o" (or "0O") or leading "0" prefix, so that
// "0640", "640" and "0o640" are the same mode. It accepts permission bits
// only (at most 0o777) and refuses a mode without them ("0"): a binding's
// mode 0 means the default, 0o400, which is not what "0" says. Errors wrap
// ErrInvalid.
func ParseMode(s string) (uint32, error) {
	digits := s
	if rest, ok := strings.CutPrefix(s, "0o"); ok {
		digits = rest
	} else if rest, ok := strings.CutPrefix(s, "0O"); ok {
		digits = rest
	}
	if digits == "" || len(digits) > 12 || strings.Trim(digits, "01234567") != "" {
		return 0, fmt.Errorf("%w: mode %q: write it in octal, e.g. 0440, 440 or 0o440", ErrInvalid, s)
	}
	var m uint32
	for _, d := range strings.TrimLeft(digits, "0") {
		m = m<<3 | uint32(d-'0')
		if m > 0o777 {
			return 0, fmt.Errorf("%w: mode %q: only permission bits (0o000..0o777) are allowed", ErrInvalid, s)
		}
	}
	if m == 0 {
		return 0, fmt.Errorf("%w: mode %q: the owner must be able to read the file (e.g. 0400)", ErrInvalid, s)
	}
	return m, nil
}

// FormatMode writes a mode the way ParseMode reads it and the CLI shows
// it: four octal digits, "0440".
func FormatMode(m uint32) string { return fmt.Sprintf("%04o", m) }
