package secret

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	good := []string{"a", "payments/db-password", "a.b_c-d/e1", strings.Repeat("a", 256), "0/1/2"}
	bad := []string{"", "A", "a/", "/a", "a//b", "a/../b", "..", "a/.", "-a", "a-", "a b", "a\x00b", "ä", strings.Repeat("a", 257), "a/.hidden"}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v", n, err)
		}
	}
	for _, n := range bad {
		if err := ValidateName(n); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidName", n, err)
		}
	}
}

func TestValidateFileName(t *testing.T) {
	for _, f := range []string{"db-password", "tls.key", "A_1"} {
		if err := ValidateFileName(f); err != nil {
			t.Errorf("%q: %v", f, err)
		}
	}
	for _, f := range []string{"", ".", "..", ".hidden", "a/b", "../x", strings.Repeat("a", 256)} {
		if err := ValidateFileName(f); err == nil {
			t.Errorf("%q accepted", f)
		}
	}
}

func TestValueNeverPrints(t *testing.T) {
	v := Value("hunter2-secret")
	var sb strings.Builder
	for _, verb := range []string{"%v", "%s", "%q", "%x", "%X", "%#v", "%+v", "%d"} {
		sb.WriteString(fmt.Sprintf(verb, v))
	}
	sb.WriteString(fmt.Sprint(v) + fmt.Sprintln(v))
	b, _ := json.Marshal(map[string]any{"v": v, "f": File{Value: v}})
	sb.Write(b)
	slog.New(slog.NewTextHandler(&sb, nil)).Info("x", "value", v)
	slog.New(slog.NewJSONHandler(&sb, nil)).Info("x", "value", v, "file", File{Value: v})
	if strings.Contains(sb.String(), "hunter2") || strings.Contains(sb.String(), fmt.Sprintf("%x", []byte("hunter2"))) {
		t.Fatalf("value printed: %s", sb.String())
	}
	v.Zero()
	for _, c := range v {
		if c != 0 {
			t.Fatal("Zero left bytes")
		}
	}
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"a", "payments/db", "a/../b", "", "A", strings.Repeat("x/", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateName(name) != nil {
			return
		}
		// An accepted name is a clean relative path of bounded length.
		if len(name) > MaxNameLen || strings.ContainsAny(name, " \x00\n\\") {
			t.Fatalf("accepted %q", name)
		}
		for _, el := range strings.Split(name, "/") {
			if el == "" || el == "." || el == ".." || strings.HasPrefix(el, ".") {
				t.Fatalf("accepted %q: element %q", name, el)
			}
		}
	})
}
