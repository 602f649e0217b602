// Package ldap is the LDAP and Active Directory implementation of
// directory.Directory, on github.com/go-ldap/ldap/v3: a service bind, a
// search for the user's entry (the login name escaped with EscapeFilter), a
// bind as that entry with the user's password, then the user's groups from
// a group search or the entry's memberOf.
package ldap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
	"unsafe"

	goldap "github.com/go-ldap/ldap/v3"

	"coffer/internal/directory"
)

// Directory is an LDAP directory.
type Directory struct {
	cfg          Config
	bindPassword string
	tls          *tls.Config
	log          *slog.Logger
}

var _ directory.Directory = (*Directory)(nil)

// New checks cfg (Validate), reads the bind password and the CA file.
func New(cfg Config, log *slog.Logger) (*Directory, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pw, err := os.ReadFile(cfg.BindPasswordFile)
	if err != nil {
		return nil, bad("bind_password_file: %v", err)
	}
	bindPassword := strings.TrimRight(string(pw), "\r\n")
	clear(pw)
	if bindPassword == "" {
		return nil, bad("bind_password_file %s: empty (an empty password is an unauthenticated bind)", cfg.BindPasswordFile)
	}
	u, _ := url.Parse(cfg.URL)
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname()}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, bad("ca_file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, bad("ca_file %s: no PEM certificate in it", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	return &Directory{cfg: cfg, bindPassword: bindPassword, tls: tc, log: log}, nil
}

// Config is the validated configuration, defaults filled in.
func (d *Directory) Config() Config { return d.cfg }

func unavailable(what string, err error) error {
	return fmt.Errorf("%w: %s: %v", directory.ErrUnavailable, what, err)
}

// dial connects, upgrades with StartTLS if configured, and binds as the
// service account. The connection is closed when ctx ends.
func (d *Directory) dial(ctx context.Context) (*goldap.Conn, func(), error) {
	dl := &net.Dialer{Timeout: d.cfg.Timeout}
	conn, err := goldap.DialURL(d.cfg.URL, goldap.DialWithDialer(dl), goldap.DialWithTLSConfig(d.tls.Clone()))
	if err != nil {
		return nil, nil, unavailable("connect", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	done := func() { stop(); conn.Close() }
	conn.SetTimeout(d.cfg.Timeout)
	if d.cfg.StartTLS {
		if err := conn.StartTLS(d.tls.Clone()); err != nil {
			done()
			return nil, nil, unavailable("StartTLS", err)
		}
	}
	if err := conn.Bind(d.cfg.BindDN, d.bindPassword); err != nil {
		done()
		return nil, nil, unavailable("service bind as "+d.cfg.BindDN, err)
	}
	return conn, done, nil
}

// Ping checks that the directory answers and takes the service account.
func (d *Directory) Ping(ctx context.Context) error {
	_, done, err := d.dial(ctx)
	if err != nil {
		return err
	}
	done()
	return nil
}

// Authenticate implements directory.Directory. A wrong password, an
// unknown, ambiguous or disabled user and refused input are all
// directory.ErrInvalidCredentials (with a directory.Error reason); anything
// that stops the directory from answering is directory.ErrUnavailable.
func (d *Directory) Authenticate(ctx context.Context, user string, password []byte) (directory.Identity, error) {
	if err := directory.CheckInput(user, password); err != nil {
		return directory.Identity{}, directory.Refused(directory.ReasonBadInput)
	}
	conn, done, err := d.dial(ctx)
	if err != nil {
		return directory.Identity{}, err
	}
	defer done()
	timeLimit := max(1, int(d.cfg.Timeout/time.Second))
	subst := strings.NewReplacer("{user}", goldap.EscapeFilter(user))
	attrs := []string{d.cfg.UserAttribute}
	if d.cfg.GroupFilter == "" {
		attrs = append(attrs, d.cfg.GroupAttribute)
	}
	res, err := conn.Search(goldap.NewSearchRequest(d.cfg.UserBase, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases,
		2, timeLimit, false, subst.Replace(d.cfg.UserFilter), attrs, nil))
	switch {
	case goldap.IsErrorWithCode(err, goldap.LDAPResultSizeLimitExceeded) || err == nil && len(res.Entries) > 1:
		d.log.Warn("ldap: the user filter matches several entries; refusing the login", "user", user)
		return directory.Identity{}, directory.Refused(directory.ReasonAmbiguous)
	case goldap.IsErrorWithCode(err, goldap.LDAPResultNoSuchObject):
		return directory.Identity{}, unavailable("user_base "+d.cfg.UserBase, err)
	case err != nil:
		return directory.Identity{}, unavailable("user search", err)
	case len(res.Entries) == 0:
		d.decoy(conn, timeLimit, password)
		return directory.Identity{}, directory.Refused(directory.ReasonUnknownUser)
	}
	entry := res.Entries[0]
	if d.cfg.DisabledFilter != "none" {
		dis, err := conn.Search(goldap.NewSearchRequest(entry.DN, goldap.ScopeBaseObject, goldap.NeverDerefAliases,
			1, timeLimit, false, d.cfg.DisabledFilter, []string{"1.1"}, nil))
		if err != nil {
			return directory.Identity{}, unavailable("disabled check", err)
		}
		if len(dis.Entries) > 0 {
			return directory.Identity{}, directory.Refused(directory.ReasonDisabled)
		}
	}
	// The password goes to the library without another copy in a Go
	// string; the encoded request is the library's and is not zeroed.
	if err := conn.Bind(entry.DN, unsafe.String(&password[0], len(password))); err != nil {
		var le *goldap.Error
		switch {
		case goldap.IsErrorWithCode(err, goldap.ErrorNetwork), !errors.As(err, &le):
			return directory.Identity{}, unavailable("user bind", err)
		case le.ResultCode == goldap.LDAPResultInvalidCredentials:
			return directory.Identity{}, directory.Refused(adReason(le))
		}
		d.log.Warn("ldap: user bind refused", "user", user, "code", le.ResultCode)
		return directory.Identity{}, directory.Refused(directory.ReasonWrongPassword)
	}
	// The person is named by the entry, not by how they spelled it: "Alice",
	// " alice" and "alice" are one person, one principal.
	name := entry.GetAttributeValue(d.cfg.UserAttribute)
	if name == "" {
		name = user
	}
	id := directory.Identity{User: directory.CanonicalUser(name), DN: entry.DN}
	if d.cfg.GroupFilter == "" {
		id.Groups = entry.GetAttributeValues(d.cfg.GroupAttribute)
		return id, nil
	}
	// Groups are searched as the service account, not as the user.
	if err := conn.Bind(d.cfg.BindDN, d.bindPassword); err != nil {
		return directory.Identity{}, unavailable("service rebind", err)
	}
	gsub := strings.NewReplacer("{user}", goldap.EscapeFilter(user), "{dn}", goldap.EscapeFilter(entry.DN))
	gres, err := conn.Search(goldap.NewSearchRequest(d.cfg.GroupBase, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases,
		0, timeLimit, false, gsub.Replace(d.cfg.GroupFilter), []string{"1.1"}, nil))
	if err != nil {
		return directory.Identity{}, unavailable("group search", err)
	}
	for _, e := range gres.Entries {
		id.Groups = append(id.Groups, e.DN)
	}
	return id, nil
}

// decoy makes for an unknown user the round trips a known one costs (the
// disabled check, a bind, to a DN that does not exist), so that the answer
// does not come back markedly sooner. It narrows the timing difference; it
// does not make logins constant-time.
func (d *Directory) decoy(conn *goldap.Conn, timeLimit int, password []byte) {
	if d.cfg.DisabledFilter != "none" {
		conn.Search(goldap.NewSearchRequest(d.cfg.UserBase, goldap.ScopeBaseObject, goldap.NeverDerefAliases,
			1, timeLimit, false, d.cfg.DisabledFilter, []string{"1.1"}, nil))
	}
	conn.Bind("cn=coffer-no-such-user,"+d.cfg.UserBase, unsafe.String(&password[0], len(password)))
}

// adReason reads Active Directory's sub-code from an invalid-credentials
// error ("AcceptSecurityContext error, data 533"): disabled (533), locked
// (775), expired (532, 701, 773) or a wrong password (52e, and anything
// else).
func adReason(e *goldap.Error) string {
	msg := ""
	if e.Err != nil {
		msg = e.Err.Error()
	}
	_, data, ok := strings.Cut(msg, ", data ")
	if !ok {
		return directory.ReasonWrongPassword
	}
	code, _, _ := strings.Cut(data, ",")
	switch strings.TrimSpace(code) {
	case "533", "775", "532", "701", "773":
		return directory.ReasonDisabled
	}
	return directory.ReasonWrongPassword
}
