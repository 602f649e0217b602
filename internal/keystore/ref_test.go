package keystore

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Ref
	}{
		{"vault:payments/db#password", Ref{"vault", "payments/db", "password"}},
		{"vault:payments/db", Ref{"vault", "payments/db", ""}},
		{"aws:arn:aws:secretsmanager:eu-west-1:111122223333:secret:db-AbCdEf#user",
			Ref{"aws", "arn:aws:secretsmanager:eu-west-1:111122223333:secret:db-AbCdEf", "user"}},
		{"ccp:Safe1/Object Name#x", Ref{}}, // space in item: refused below
		{"conjur:prod/db/password", Ref{"conjur", "prod/db/password", ""}},
		{"az-1:db-password#key with spaces", Ref{"az-1", "db-password", "key with spaces"}},
		{"v:ä/ö#ü", Ref{"v", "ä/ö", "ü"}},
	} {
		got, err := ParseRef(tc.in)
		if tc.want == (Ref{}) {
			if err == nil {
				t.Errorf("ParseRef(%q) = %+v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if got.String() != tc.in {
			t.Errorf("String() = %q, want %q", got.String(), tc.in)
		}
	}
}

func TestParseRefErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "empty"},
		{"payments/db", "no ':'"},
		{":payments/db", "upstream name is empty"},
		{"Vault:x", "lower-case"},
		{"1vault:x", "starting with a letter"},
		{"vault-:x", "lower-case"},
		{"va_ult:x", "lower-case"},
		{strings.Repeat("v", 64) + ":x", "longer than 63"},
		{"vault:", "item is empty"},
		{"vault:#key", "item is empty"},
		{"vault:a#", "key after '#' is empty"},
		{"vault:a#b#c", "more than one '#'"},
		{"vault:a b", "space or control"},
		{"vault:a\tb", "space or control"},
		{"vault:a\x00b", "space or control"},
		{"vault:a\u00a0b", "space or control"},
		{"vault:a\u200bb", "space or control"},
		{"vault:a#b\nc", "control character"},
		{"vault:a\xffb", "UTF-8"},
		{"vault:" + strings.Repeat("a", MaxItemLen+1), "item is longer"},
		{"vault:a#" + strings.Repeat("k", MaxKeyLen+1), "key is longer"},
		{strings.Repeat("x", 5000), "longer than"},
	} {
		_, err := ParseRef(tc.in)
		if !errors.Is(err, ErrInvalidRef) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseRef(%.40q) = %v, want ErrInvalidRef mentioning %q", tc.in, err, tc.want)
		}
		if err != nil && len(err.Error()) > 300 {
			t.Errorf("ParseRef(%.40q): error of %d bytes", tc.in, len(err.Error()))
		}
	}
}

// FuzzParseRef: no panic; an accepted reference round-trips through String
// and obeys every rule; a refused one gets a short ErrInvalidRef error.
func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"vault:payments/db#password", "aws:arn:aws:x:y#k", "a:b", ":", "a:#", "a:b#c#d",
		"A:b", "a:b c", "a:\x00", "a:ä#ü", "a:b#k k", "x-y:z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidRef) {
				t.Fatalf("error %v does not wrap ErrInvalidRef", err)
			}
			if len(err.Error()) > 400 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		if r.String() != s {
			t.Fatalf("String() = %q, want %q", r.String(), s)
		}
		if back, err := ParseRef(r.String()); err != nil || back != r {
			t.Fatalf("round trip: %+v, %v", back, err)
		}
		if ValidateUpstreamName(r.Upstream) != nil || r.Item == "" || strings.ContainsAny(r.Item, "# ") ||
			strings.Contains(r.Key, "#") || !utf8.ValidString(r.Item+r.Key) {
			t.Fatalf("accepted %+v", r)
		}
		for _, c := range r.Item + r.Key {
			if unicode.IsControl(c) {
				t.Fatalf("accepted a control character: %+v", r)
			}
		}
	})
}
