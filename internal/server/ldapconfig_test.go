package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/internal/authz"
)

// issueLDAP is the ldap: section exactly as issue 14 and docs/ldap.md show it.
const issueLDAP = `ldap:
  url: ldap://127.0.0.1:3890          # ldaps:// or ldap:// + start_tls: true in production
  insecure: true                      # allows plain ldap:// (tests only)
  bind_dn: cn=admin,dc=coffer,dc=test
  bind_password_file: /etc/coffer/ldap-bind-password
  user_base: ou=people,dc=coffer,dc=test
  user_filter: (uid={user})
  group_base: ou=groups,dc=coffer,dc=test
  group_filter: (member={dn})
  groups:
    cn=payments-ops,ou=groups,dc=coffer,dc=test: {role: operator, scope: "payments/*"}
`

func loadLDAP(t *testing.T, yaml string) (Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "server.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c := Defaults()
	if err := c.LoadFile(p); err != nil {
		return c, err
	}
	return c, c.Validate()
}

func TestLDAPConfig(t *testing.T) {
	c, err := loadLDAP(t, issueLDAP)
	if err != nil {
		t.Fatal(err)
	}
	l := c.LDAP
	if l == nil || l.URL != "ldap://127.0.0.1:3890" || !l.Insecure || l.BindDN != "cn=admin,dc=coffer,dc=test" ||
		l.GroupFilter != "(member={dn})" || l.SessionTTL != 8*time.Hour {
		t.Fatalf("ldap = %+v", l)
	}
	m := l.Mapping()
	if g := m["cn=payments-ops,ou=groups,dc=coffer,dc=test"]; g != (authz.Grant{Role: authz.Operator, Scope: "payments/"}) {
		t.Fatalf("mapping = %v", m)
	}
	// AD defaults.
	c, err = loadLDAP(t, "ldap:\n  url: ldaps://dc1.corp.test\n  schema: ad\n  nested_groups: true\n  bind_dn: cn=coffer,cn=Users,dc=corp,dc=test\n"+
		"  bind_password_file: /x\n  user_base: dc=corp,dc=test\n  group_base: dc=corp,dc=test\n  session_ttl: 1h\n  groups:\n    CN=Coffer Admins,CN=Users,DC=corp,DC=test: {role: admin}\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.LDAP.UserFilter != "(sAMAccountName={user})" || c.LDAP.GroupFilter != "(member:1.2.840.113556.1.4.1941:={dn})" ||
		!strings.Contains(c.LDAP.DisabledFilter, "1.2.840.113556.1.4.803") || c.LDAP.SessionTTL != time.Hour {
		t.Fatalf("ad = %+v", c.LDAP)
	}
	bad := []struct{ replace, with, want string }{
		{"  insecure: true                      # allows plain ldap:// (tests only)\n", "", "plain ldap://"},
		{"  insecure: true", "  insecure: yes-please", "line 3: cannot unmarshal !!str `yes-please` into bool"},
		{"  insecure: true", "  insecure: true\n  colour: blue", "colour"},
		{"{role: operator,", "{role: operator, extra: 1,", "extra"},
		{"role: operator", "role: root", "role"},
		{"role: operator", "role: agent", "role"},
		{`scope: "payments/*"`, `scope: "pay*ments/"`, "scope"},
		{"(uid={user})", "(uid=alice)", "{user}"},
		{"(uid={user})", "(uid={user}", "user_filter"},
		{"(member={dn})", "(member=x)", "{dn}"},
		{"  group_base: ou=groups,dc=coffer,dc=test\n", "", "group_base"},
		{"url: ldap://127.0.0.1:3890", "url: http://127.0.0.1:3890", "scheme"},
		{"url: ldap://127.0.0.1:3890", "url: ''", "url"},
		{"  bind_dn: cn=admin,dc=coffer,dc=test\n", "", "bind_dn"},
		{"  bind_password_file: /etc/coffer/ldap-bind-password\n", "", "bind_password_file"},
		{"  user_base: ou=people,dc=coffer,dc=test\n", "", "user_base"},
		{"  groups:\n    cn=payments-ops,ou=groups,dc=coffer,dc=test: {role: operator, scope: \"payments/*\"}\n", "", "groups"},
		{"  insecure: true", "  insecure: true\n  session_ttl: 30s", "session_ttl"},
		{"  insecure: true", "  insecure: true\n  session_ttl: forever", "line 4: cannot unmarshal !!str `forever` into time.Duration"},
		{"  insecure: true", "  insecure: true\n  start_tls: true\n  url: ldaps://x", "url"},
		{"  insecure: true", "  insecure: true\n  nested_groups: true", "nested_groups"},
		{"  insecure: true", "  insecure: true\n  schema: novell", "schema"},
		{"{role: operator, scope: \"payments/*\"}\n", "{role: operator, scope: \"payments/*\"}\n    CN=Payments-Ops,OU=groups,DC=coffer,DC=test: {role: viewer}\n", "same group"},
	}
	for _, b := range bad {
		y := strings.Replace(issueLDAP, b.replace, b.with, 1)
		if y == issueLDAP {
			t.Fatalf("replace %q: not in the config", b.replace)
		}
		if _, err := loadLDAP(t, y); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%q -> %q: err %v, want it to name %q", b.replace, b.with, err, b.want)
		}
	}
}

// Validate runs at config load and again when the directory is built: the
// defaults it fills in must pass a second time.
func TestLDAPConfigValidateTwice(t *testing.T) {
	c, err := loadLDAP(t, strings.Replace(issueLDAP, "  group_filter: (member={dn})\n", "  nested_groups: true\n", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.LDAP.Validate(); err != nil {
		t.Fatalf("second Validate: %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("second Validate: %v", err)
	}
}
