package policy

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRotation(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      string // substring of the error; "" = valid
	}{
		{"", "", ""},
		{"file", "", ""},
		{"none", "none", ""},
		{"restart-process", "restart-process", ""},
		{"signal:SIGHUP", "signal:SIGHUP", ""},
		{"signal:HUP", "signal:SIGHUP", ""},
		{"signal:hup", "signal:SIGHUP", ""},
		{"signal:sigusr2", "signal:SIGUSR2", ""},
		{"signal:SIGWINCH", "signal:SIGWINCH", ""},
		{"signal:SIGKILL", "", "kills the process"},
		{"signal:TERM", "", "use restart-process"},
		{"signal:SIGSTOP", "", "freezes"},
		{"signal:SIGTTIN", "", "suspends"},
		{"signal:9", "", "unknown signal"},
		{"signal:", "", "unknown signal"},
		{"signal:SIGHUP ", "", "unknown signal"},
		{"SIGHUP", "", "want file, signal:<NAME>"},
		{"File", "", "want file"},
		{"restart", "", "want file"},
	} {
		got, err := ParseRotation(tc.in)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("ParseRotation(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseRotation(%q) = %q, %v; want an ErrInvalid with %q", tc.in, got, err, tc.err)
		}
	}
}

func TestRotationSignal(t *testing.T) {
	if s, ok := RotationSignal("signal:SIGHUP"); !ok || s != "SIGHUP" {
		t.Fatalf("RotationSignal = %q, %v", s, ok)
	}
	for _, r := range []string{"", "none", "restart-process", "signal:hup", "signal:SIGKILL"} {
		if s, ok := RotationSignal(r); ok {
			t.Errorf("RotationSignal(%q) = %q: only canonical signal contracts have a signal", r, s)
		}
	}
	if RotationName("") != "file" || RotationName("none") != "none" {
		t.Fatal("RotationName")
	}
}

func TestBindingRotation(t *testing.T) {
	b := Binding{Name: "web-db", Secret: "payments/db", Selector: "app=web", Rotation: "signal:hup"}
	if err := b.Normalize(); err != nil || b.Rotation != "signal:SIGHUP" {
		t.Fatalf("Normalize: %v, rotation %q", err, b.Rotation)
	}
	s, err := NewSet([]Binding{b})
	if err != nil {
		t.Fatal(err)
	}
	g := s.Match(Target{Labels: map[string]string{"app": "web"}})
	if len(g) != 1 || g[0].Rotation != "signal:SIGHUP" {
		t.Fatalf("grant %+v lacks the rotation contract", g)
	}
	bad := Binding{Name: "web-db", Secret: "payments/db", Selector: "app=web", Rotation: "signal:SIGKILL"}
	orig := bad
	err = bad.Normalize()
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `"web-db": rotation "signal:SIGKILL"`) || bad != orig {
		t.Fatalf("Normalize(SIGKILL) = %v (binding %+v)", err, bad)
	}
	def := Binding{Name: "web-db", Secret: "payments/db", Selector: "app=web", Rotation: "file"}
	if err := def.Normalize(); err != nil || def.Rotation != "" {
		t.Fatalf("file normalizes to %q, %v; want \"\" (the default's canonical form)", def.Rotation, err)
	}
}

// FuzzParseRotation checks that a contract either fails with ErrInvalid or
// has a canonical form that parses to itself, and that only canonical
// signal contracts name a signal.
func FuzzParseRotation(f *testing.F) {
	for _, s := range []string{"", "file", "none", "restart-process", "signal:SIGHUP", "signal:hup", "signal:KILL", "signal:", "signal:SIGSIGHUP", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		canon, err := ParseRotation(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		again, err := ParseRotation(canon)
		if err != nil || again != canon {
			t.Fatalf("canonical %q of %q: %q, %v", canon, s, again, err)
		}
		sig, ok := RotationSignal(canon)
		if ok != strings.HasPrefix(canon, RotationSignalPrefix) || ok && canon != RotationSignalPrefix+sig {
			t.Fatalf("RotationSignal(%q) = %q, %v", canon, sig, ok)
		}
	})
}
