package ldap_test

import (
	"context"
	"errors"
	"testing"

	"coffer/internal/authz"
	"coffer/internal/directory"
	cldap "coffer/internal/directory/ldap"
	"coffer/internal/directory/ldap/ldaptest"
)

// TestActiveDirectory runs the AD defaults (schema: ad) against a real
// Samba AD DC: sAMAccountName, nested groups through
// LDAP_MATCHING_RULE_IN_CHAIN, the ACCOUNTDISABLE filter and AD's own
// bind sub-codes, UPN logins.
func TestActiveDirectory(t *testing.T) {
	if testing.Short() {
		t.Skip("provisions a Samba AD domain (several seconds)")
	}
	ad := ldaptest.StartSamba(t)
	ctx := context.Background()
	base := cldap.Config{
		URL: ad.URL, Insecure: true, Schema: cldap.SchemaAD,
		BindDN: ldaptest.ADAdminDN, BindPasswordFile: ad.BindPasswordFile,
		UserBase: ldaptest.ADBase, GroupBase: ldaptest.ADBase,
		Groups: map[string]authz.Grant{
			"cn=Coffer-Users,cn=users,dc=corp,dc=coffer,dc=test": {Role: authz.Viewer},
			ldaptest.ADPayments: {Role: authz.Operator, Scope: "payments/*"},
		},
	}
	nested := base
	nested.NestedGroups = true
	direct := base // memberOf: direct groups only
	direct.GroupBase = ""
	for _, c := range []struct {
		name           string
		cfg            cldap.Config
		user, password string
		reason         string
		grants         []authz.Grant
	}{
		{"nested: alice through coffer-admins", nested, "alice", ldaptest.ADAccounts[0].Password, "", []authz.Grant{{Role: authz.Viewer}}},
		{"nested: ALICE", nested, "ALICE", ldaptest.ADAccounts[0].Password, "", []authz.Grant{{Role: authz.Viewer}}},
		{"direct memberOf: alice in no mapped group", direct, "alice", ldaptest.ADAccounts[0].Password, "", nil},
		{"nested: bob", nested, "bob", ldaptest.ADAccounts[1].Password, "", []authz.Grant{{Role: authz.Operator, Scope: "payments/"}}},
		{"direct: bob", direct, "bob", ldaptest.ADAccounts[1].Password, "", []authz.Grant{{Role: authz.Operator, Scope: "payments/"}}},
		{"wrong password (data 52e)", nested, "alice", "Wr0ng-Passw0rd!", directory.ReasonWrongPassword, nil},
		{"unknown", nested, "mallory", "x", directory.ReasonUnknownUser, nil},
		{"disabled by userAccountControl", nested, "eve", ldaptest.ADAccounts[2].Password, directory.ReasonDisabled, nil},
		{"injection", nested, "*", ldaptest.ADAccounts[0].Password, directory.ReasonUnknownUser, nil},
	} {
		d := newDir(t, c.cfg)
		cfg := d.Config()
		id, err := d.Authenticate(ctx, c.user, []byte(c.password))
		if c.reason != "" {
			if directory.ReasonOf(err) != c.reason {
				t.Errorf("%s: %v, want reason %s", c.name, err, c.reason)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		got := cfg.Mapping().Grants(id.Groups)
		if len(got) != len(c.grants) || (len(got) > 0 && got[0] != c.grants[0]) {
			t.Errorf("%s: grants %v (groups %v), want %v", c.name, got, id.Groups, c.grants)
		}
	}
	// Without the filter, AD itself refuses a disabled account's bind
	// (49, data 533): still "disabled", never a success.
	off := nested
	off.DisabledFilter = "none"
	d := newDir(t, off)
	if _, err := d.Authenticate(ctx, "eve", []byte(ldaptest.ADAccounts[2].Password)); directory.ReasonOf(err) != directory.ReasonDisabled {
		t.Errorf("disabled, no filter: %v", err)
	}
	// UPN logins: still named by sAMAccountName, unless user_attribute
	// says otherwise.
	upn := nested
	upn.UserFilter = "(userPrincipalName={user})"
	d = newDir(t, upn)
	if id, err := d.Authenticate(ctx, "Bob@corp.coffer.test", []byte(ldaptest.ADAccounts[1].Password)); err != nil || id.User != "bob" {
		t.Errorf("UPN: %+v %v", id, err)
	}
	upn.UserAttribute = "userPrincipalName"
	d = newDir(t, upn)
	if id, err := d.Authenticate(ctx, "Bob@corp.coffer.test", []byte(ldaptest.ADAccounts[1].Password)); err != nil || id.User != "bob@corp.coffer.test" {
		t.Errorf("UPN named by UPN: %+v %v", id, err)
	}
	ad.Stop()
	if _, err := d.Authenticate(ctx, "bob@corp.coffer.test", []byte(ldaptest.ADAccounts[1].Password)); !errors.Is(err, directory.ErrUnavailable) {
		t.Errorf("AD down: %v", err)
	}
}
