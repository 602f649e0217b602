package policy

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

func TestParseLabels(t *testing.T) {
	good := map[string]map[string]string{
		"":                        {},
		"env=prod":                {"env": "prod"},
		" env = prod , zone=eu-1": {"env": "prod", "zone": "eu-1"},
		"example.com/tier=":       {"example.com/tier": ""},
	}
	for in, want := range good {
		got, err := ParseLabels(in)
		if err != nil || !maps.Equal(got, want) {
			t.Errorf("ParseLabels(%q) = %v, %v; want %v", in, got, err, want)
		}
		if again, err := ParseLabels(FormatLabels(got)); err != nil || !maps.Equal(again, got) {
			t.Errorf("round trip of %q: %v, %v", in, again, err)
		}
	}
	bad := []string{"env", "env=prod,env=dev", "=x", "env=pr od", "-x=y", "a=" + strings.Repeat("v", 64),
		"env=prod,", strings.Repeat("k=v,", 65)}
	for _, in := range bad {
		if _, err := ParseLabels(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseLabels(%q): err %v, want ErrInvalid", in, err)
		}
	}
}

func FuzzParseLabels(f *testing.F) {
	for _, s := range []string{"", "env=prod", "a=b,c=d", "x/y=z", "=", ",,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ls, err := ParseLabels(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if err := ValidateLabels(ls); err != nil {
			t.Fatalf("parsed set does not validate: %v", err)
		}
		again, err := ParseLabels(FormatLabels(ls))
		if err != nil || !maps.Equal(again, ls) {
			t.Fatalf("round trip: %v, %v", again, err)
		}
	})
}

// Label-set errors say "invalid labels", not "invalid binding", and still
// wrap ErrInvalid.
func TestLabelsErrors(t *testing.T) {
	for in, msg := range map[string]string{
		"env":                          `invalid labels: "env" is not key=value`,
		"env=a,env=b":                  `invalid labels: key "env" given twice`,
		"-x=y":                         `invalid labels: label key "-x": `,
		"a=" + "v v":                   `invalid labels: label "a": value "v v": `,
		"a=" + strings.Repeat("v", 64): `invalid labels: label "a": value`,
	} {
		_, err := ParseLabels(in)
		if !errors.Is(err, ErrInvalid) || !errors.Is(err, ErrInvalidLabels) || !strings.HasPrefix(err.Error(), msg) {
			t.Errorf("ParseLabels(%q) = %v, want ErrInvalid and ErrInvalidLabels saying %q", in, err, msg)
		}
	}
	if errors.Is(ErrInvalid, ErrInvalidLabels) {
		t.Error("every ErrInvalid is not a label error")
	}
}
