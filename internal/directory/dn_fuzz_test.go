package directory

import "testing"

// FuzzNormalizeDN: never panics, and a normalized DN normalizes to itself
// (mapping keys and a directory's group DNs meet in that form).
func FuzzNormalizeDN(f *testing.F) {
	for _, s := range []string{
		"cn=payments-ops,ou=groups,dc=coffer,dc=test",
		"CN=Coffer Admins,CN=Users,DC=corp,DC=test",
		`cn=a\,b+uid=x,dc=t`, `cn=#04024869,dc=t`, "cn= spaced ,dc=t", `cn=\20x\20,dc=t`, "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dn string) {
		n, err := NormalizeDN(dn)
		if err != nil {
			return
		}
		n2, err := NormalizeDN(n)
		if err != nil || n2 != n {
			t.Fatalf("NormalizeDN(%q) = %q, then %q, %v", dn, n, n2, err)
		}
	})
}

func TestMappingGrants(t *testing.T) {
	m := Mapping{"cn=ops,dc=t": {Role: "operator", Scope: "payments/"}, "cn=aud,dc=t": {Role: "auditor"}}
	got := m.Grants([]string{"CN=Ops, DC=T", "cn=other,dc=t", "not a dn", "cn=ops,dc=t", "cn=aud,dc=t"})
	if len(got) != 2 || got[0].Role != "operator" || got[1].Role != "auditor" {
		t.Fatalf("got %v", got)
	}
	if m.Grants([]string{"cn=other,dc=t"}) != nil {
		t.Fatal("an unmapped group granted something")
	}
}
