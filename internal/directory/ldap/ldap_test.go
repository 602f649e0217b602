package ldap_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"coffer/internal/directory"
	cldap "coffer/internal/directory/ldap"
	"coffer/internal/directory/ldap/ldaptest"
)

func newDir(t *testing.T, cfg cldap.Config) *cldap.Directory {
	t.Helper()
	d, err := cldap.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestAuthenticate runs every login case against a real slapd, with the
// group filter and with memberOf, over plain LDAP, StartTLS and LDAPS.
func TestAuthenticate(t *testing.T) {
	srv := ldaptest.Start(t)
	ctx := context.Background()
	member := srv.Config()
	memberOf := srv.Config()
	memberOf.GroupFilter, memberOf.GroupBase = "", ""
	startTLS := srv.Config()
	startTLS.Insecure, startTLS.StartTLS, startTLS.CAFile = false, true, srv.CAFile
	ldaps := srv.Config()
	ldaps.URL, ldaps.Insecure, ldaps.CAFile = srv.LDAPSURL, false, srv.CAFile
	for _, variant := range []struct {
		name string
		cfg  cldap.Config
	}{{"member", member}, {"memberOf", memberOf}, {"starttls", startTLS}, {"ldaps", ldaps}} {
		t.Run(variant.name, func(t *testing.T) {
			d := newDir(t, variant.cfg)
			m := d.Config()
			mapping := (&m).Mapping()
			cases := []struct {
				user, password string
				reason         string   // "" = success
				groups         []string // with success
				grants         int
			}{
				{"alice", ldaptest.Password("alice"), "", []string{ldaptest.PaymentsOps, ldaptest.Auditors, ldaptest.Developers}, 2},
				{"ALICE", ldaptest.Password("alice"), "", []string{ldaptest.PaymentsOps, ldaptest.Auditors, ldaptest.Developers}, 2},
				{" Alice  ", ldaptest.Password("alice"), "", []string{ldaptest.PaymentsOps, ldaptest.Auditors, ldaptest.Developers}, 2},
				{"carol", ldaptest.Password("carol"), "", []string{ldaptest.PaymentsOps}, 1},
				{"bob", ldaptest.Password("bob"), "", []string{ldaptest.Developers}, 0},
				{"alice", "wrong", directory.ReasonWrongPassword, nil, 0},
				{"alice", ldaptest.Password("bob"), directory.ReasonWrongPassword, nil, 0},
				{"mallory", "x", directory.ReasonUnknownUser, nil, 0},
				{"dave", ldaptest.Password("dave"), directory.ReasonDisabled, nil, 0},
				{"alice", "", directory.ReasonBadInput, nil, 0},
				{"", "x", directory.ReasonBadInput, nil, 0},
				// Injection: unescaped, "*" and "al*" would find alice
				// (and her password would log in as her), and ")(uid=*"
				// would widen the filter; escaped they match nothing.
				{"*", ldaptest.Password("alice"), directory.ReasonUnknownUser, nil, 0},
				{"al*", ldaptest.Password("alice"), directory.ReasonUnknownUser, nil, 0},
				{"*)(uid=*", ldaptest.Password("alice"), directory.ReasonUnknownUser, nil, 0},
				{"alice)(uid=*", ldaptest.Password("alice"), directory.ReasonUnknownUser, nil, 0},
				{"alice\x00", ldaptest.Password("alice"), directory.ReasonBadInput, nil, 0},
				{"alice", ldaptest.Password("alice") + "\x00", directory.ReasonBadInput, nil, 0},
				{`alice\2a`, ldaptest.Password("alice"), directory.ReasonUnknownUser, nil, 0},
			}
			for _, c := range cases {
				id, err := d.Authenticate(ctx, c.user, []byte(c.password))
				if c.reason != "" {
					if !errors.Is(err, directory.ErrInvalidCredentials) || directory.ReasonOf(err) != c.reason {
						t.Errorf("%q: err %v (reason %q), want reason %s", c.user, err, directory.ReasonOf(err), c.reason)
					}
					continue
				}
				if err != nil {
					t.Errorf("%q: %v", c.user, err)
					continue
				}
				got := slices.Clone(id.Groups)
				norm(t, got)
				want := slices.Clone(c.groups)
				norm(t, want)
				if !slices.Equal(got, want) {
					t.Errorf("%q: groups %v, want %v", c.user, got, want)
				}
				// Named by the entry's uid, however it was spelled.
				if want := strings.ToLower(strings.TrimSpace(c.user)); id.User != want {
					t.Errorf("%q: user %q", c.user, id.User)
				}
				if n := len(mapping.Grants(id.Groups)); n != c.grants {
					t.Errorf("%q: %d grants, want %d", c.user, n, c.grants)
				}
			}
		})
	}
	// Down: unavailable, not invalid credentials.
	srv.Stop()
	d := newDir(t, member)
	_, err := d.Authenticate(ctx, "alice", []byte(ldaptest.Password("alice")))
	if !errors.Is(err, directory.ErrUnavailable) || errors.Is(err, directory.ErrInvalidCredentials) {
		t.Fatalf("directory down: %v", err)
	}
	if err := d.Ping(ctx); !errors.Is(err, directory.ErrUnavailable) {
		t.Fatalf("ping down: %v", err)
	}
	srv.Restart()
	if _, err := d.Authenticate(ctx, "alice", []byte(ldaptest.Password("alice"))); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}

// A wrong service password is the directory being unusable (503), not the
// user's fault.
func TestWrongBindPassword(t *testing.T) {
	srv := ldaptest.Start(t)
	cfg := srv.Config()
	cfg.BindPasswordFile = t.TempDir() + "/pw"
	writeFile(t, cfg.BindPasswordFile, "nope\n")
	d := newDir(t, cfg)
	_, err := d.Authenticate(context.Background(), "alice", []byte(ldaptest.Password("alice")))
	if !errors.Is(err, directory.ErrUnavailable) {
		t.Fatalf("got %v", err)
	}
}

// An LDAPS server whose certificate is not from ca_file is refused.
func TestUntrustedCertificate(t *testing.T) {
	srv := ldaptest.Start(t)
	cfg := srv.Config()
	cfg.URL, cfg.Insecure = srv.LDAPSURL, false
	d := newDir(t, cfg) // system roots only
	_, err := d.Authenticate(context.Background(), "alice", []byte(ldaptest.Password("alice")))
	if !errors.Is(err, directory.ErrUnavailable) {
		t.Fatalf("got %v", err)
	}
}

func norm(t *testing.T, dns []string) {
	t.Helper()
	for i, g := range dns {
		n, err := directory.NormalizeDN(g)
		if err != nil {
			t.Fatal(err)
		}
		dns[i] = n
	}
	slices.Sort(dns)
}

// A locked account is refused by slapd itself too (ppolicy), when the
// disabled filter is turned off: the filter is a second lock, not the only
// one, and the login never succeeds.
func TestLockedWithoutFilter(t *testing.T) {
	srv := ldaptest.Start(t)
	cfg := srv.Config()
	cfg.DisabledFilter = "none"
	d := newDir(t, cfg)
	_, err := d.Authenticate(context.Background(), "dave", []byte(ldaptest.Password("dave")))
	if !errors.Is(err, directory.ErrInvalidCredentials) {
		t.Fatalf("locked dave without the filter: %v", err)
	}
}

// A user filter that matches several entries refuses the login rather
// than binding as whichever came first.
func TestAmbiguousUser(t *testing.T) {
	srv := ldaptest.Start(t)
	cfg := srv.Config()
	cfg.UserFilter = "(|(uid={user})(objectClass=inetOrgPerson))"
	d := newDir(t, cfg)
	_, err := d.Authenticate(context.Background(), "alice", []byte(ldaptest.Password("alice")))
	if directory.ReasonOf(err) != directory.ReasonAmbiguous {
		t.Fatalf("got %v", err)
	}
}

// New refuses a missing or empty bind password file and a bad CA file:
// the server does not start with them.
func TestNewRefuses(t *testing.T) {
	dir := t.TempDir()
	base := cldap.Config{URL: "ldaps://127.0.0.1:1", BindDN: "cn=x", UserBase: "dc=x",
		Groups: ldaptest.Groups, BindPasswordFile: dir + "/missing"}
	empty, notPEM := dir+"/empty", dir+"/ca.pem"
	writeFile(t, empty, "\n")
	writeFile(t, notPEM, "not a certificate")
	pw := dir + "/pw"
	writeFile(t, pw, "x")
	for _, c := range []struct {
		mut  func(*cldap.Config)
		want string
	}{
		{func(*cldap.Config) {}, "bind_password_file"},
		{func(c *cldap.Config) { c.BindPasswordFile = empty }, "empty"},
		{func(c *cldap.Config) { c.BindPasswordFile, c.CAFile = pw, notPEM }, "ca_file"},
		{func(c *cldap.Config) { c.BindPasswordFile, c.CAFile = pw, dir+"/nope.pem" }, "ca_file"},
	} {
		cfg := base
		c.mut(&cfg)
		if _, err := cldap.New(cfg, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New = %v, want an error naming %s", err, c.want)
		}
	}
}
