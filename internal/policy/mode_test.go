package policy

import (
	"errors"
	"strings"
	"testing"
)

// Every spelling the CLI, the apply files and the error messages use means
// the same mode: the mode error suggests 0o400, and 0o640 must be accepted.
func TestParseMode(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want uint32
	}{
		{"0640", 0o640}, {"640", 0o640}, {"0o640", 0o640}, {"0O640", 0o640},
		{"0400", 0o400}, {"400", 0o400}, {"0o400", 0o400}, {"0o0400", 0o400},
		{"0777", 0o777}, {"00440", 0o440}, {"4", 0o4}, {"0o4", 0o4},
	} {
		got, err := ParseMode(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseMode(%q) = %o, %v; want %o", tt.in, got, err, tt.want)
		}
		if again, err := ParseMode(FormatMode(got)); err != nil || again != got {
			t.Errorf("ParseMode(FormatMode(%o)) = %o, %v", got, again, err)
		}
	}
	for _, tt := range []struct{ in, says string }{
		{"", "write it in octal"},
		{"0o", "write it in octal"},
		{"0x1a0", "write it in octal"},
		{"0640 ", "write it in octal"},
		{"-640", "write it in octal"},
		{"+640", "write it in octal"},
		{"0b1", "write it in octal"},
		{"0o0o640", "write it in octal"},
		{"rw-r-----", "write it in octal"},
		{"288", "write it in octal"}, // decimal 0o440 as JSON has it: not octal
		{"1640", "only permission bits"},
		{"04000", "only permission bits"},
		{"7777777777777", "write it in octal"},
		{"0", "the owner must be able to read"},
		{"0o000", "the owner must be able to read"},
	} {
		_, err := ParseMode(tt.in)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("ParseMode(%q) = %v, want ErrInvalid saying %q", tt.in, err, tt.says)
		}
	}
}

// The mode error of Normalize writes the mode in a form ParseMode takes.
func TestModeErrorSuggestsAParsableMode(t *testing.T) {
	b := Binding{Name: "b", Secret: "s", Selector: "app=web", Mode: 0o240}
	err := b.Normalize()
	if err == nil || !strings.Contains(err.Error(), "0o240") || !strings.Contains(err.Error(), "add 0o400") {
		t.Fatalf("Normalize: %v", err)
	}
	if m, err := ParseMode("0o240"); err != nil || m != 0o240 {
		t.Fatalf("ParseMode of the mode in the error: %o, %v", m, err)
	}
}

// FuzzParseMode checks that ParseMode never panics, that errors wrap
// ErrInvalid, and that an accepted mode is non-zero permission bits that
// read back from FormatMode.
func FuzzParseMode(f *testing.F) {
	for _, s := range []string{"0640", "640", "0o640", "0O640", "0", "", "0o", "0x1", "1777", "0o0o1", "-1", "00000000000400"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMode(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if m == 0 || m&^0o777 != 0 {
			t.Fatalf("ParseMode(%q) = %o", s, m)
		}
		if again, err := ParseMode(FormatMode(m)); err != nil || again != m {
			t.Fatalf("ParseMode(FormatMode(%o)) = %o, %v", m, again, err)
		}
	})
}
