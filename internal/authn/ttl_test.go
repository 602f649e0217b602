package authn

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseTTL(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"never", 0},
		{"30m", 30 * time.Minute},
		{"720h", 720 * time.Hour},
		{"30d", 30 * day},
		{"2w", 14 * day},
		{"1w3d12h", 10*day + 12*time.Hour},
		{"1.5d", 36 * time.Hour},
		{"90s", 90 * time.Second},
		{"1h30m", 90 * time.Minute},
		{"1.5m", 90 * time.Second},
		{"500ms", 500 * time.Millisecond},
		{"36500d", MaxTTL},
	} {
		got, err := ParseTTL(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseTTL(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, msg string }{
		{"0s", `use "never"`},
		{"0", "use a duration"},
		{"0d", "must be positive"},
		{"-1h", "use a duration"},
		{"+1h", "use a duration"},
		{"", "use a duration"},
		{"30", "use a duration"},
		{"30x", "use a duration"},
		{"d", "use a duration"},
		{"1..5h", "use a duration"},
		{".5h", "use a duration"},
		{"1 h", "use a duration"},
		{"Never", "use a duration"},
		{"36501d", "too long"},
		{"999999999999w", "too long"},
		{"99999999999999999999h", "too long"},
	} {
		_, err := ParseTTL(tc.in)
		if !errors.Is(err, ErrInvalidTTL) || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), `"`+tc.in+`"`) {
			t.Errorf("ParseTTL(%q) = %v; want an error saying %q", tc.in, err, tc.msg)
		}
	}
}

func FuzzParseTTL(f *testing.F) {
	for _, s := range []string{"30d", "2w", "1w3d12h", "0s", "never", "1.5m", "-1h", "9999999999w"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseTTL(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidTTL) {
				t.Fatalf("%q: unwrapped error %v", s, err)
			}
			return
		}
		if s == Never {
			if d != 0 {
				t.Fatalf("never = %v", d)
			}
			return
		}
		if d <= 0 || d > MaxTTL {
			t.Fatalf("%q = %v: out of range", s, d)
		}
		// What ParseTTL accepts, time.Duration.String writes back.
		if back, err := ParseTTL(d.String()); err != nil || back != d {
			t.Fatalf("%q = %v; %q = %v, %v", s, d, d.String(), back, err)
		}
	})
}
