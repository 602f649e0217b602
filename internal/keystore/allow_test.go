package keystore_test

import (
	"context"
	"errors"
	"testing"

	"coffer/internal/keystore"
	"coffer/internal/keystore/keystoretest"
)

// TestRestrict: an operator who may link secrets cannot use Coffer's
// upstream credentials to reach items outside the upstream's allow list
// (another team's items), by ParseRef, Read or Check.
func TestRestrict(t *testing.T) {
	m := keystoretest.NewMemory("vault", 0)
	m.Set("payments/db", []byte(`{"password":"p"}`))
	m.Set("hr/salaries", []byte(`{"db":"s"}`))
	ks := keystore.Restrict(m, "vault", []string{"payments/*", "shared/ca"})
	if _, ok := ks.(keystore.Hinter); !ok {
		t.Error("Restrict hid the Hinter capability")
	}
	set := keystore.Set{"vault": ks}
	if _, err := set.ParseRef("vault:payments/db#password"); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"vault:hr/salaries#db", "vault:payments", "vault:shared/ca2"} {
		if _, err := set.ParseRef(ref); !errors.Is(err, keystore.ErrInvalidRef) {
			t.Errorf("ParseRef(%s) = %v, want ErrInvalidRef", ref, err)
		}
	}
	if _, err := ks.Read(context.Background(), "hr/salaries"); !errors.Is(err, keystore.ErrInvalidRef) {
		t.Errorf("Read outside the allow list: %v", err)
	}
	st, err := ks.Check(context.Background(), []string{"payments/db", "hr/salaries"})
	if err != nil || st["payments/db"].Version == "" || !errors.Is(st["hr/salaries"].Err, keystore.ErrInvalidRef) {
		t.Errorf("Check: %+v %v", st, err)
	}
	if keystore.Restrict(m, "vault", nil) != keystore.Keystore(m) {
		t.Error("no patterns should mean no wrapper")
	}
	if err := keystore.ValidatePatterns([]string{"a*b"}); err == nil {
		t.Error("a '*' inside a pattern was accepted")
	}
}
