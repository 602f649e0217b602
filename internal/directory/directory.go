// Package directory is the seam between Coffer's logins and a directory of
// people (LDAP, Active Directory): Authenticate checks a user's password and
// returns who they are and which groups they are in; a Mapping turns those
// groups into authz grants. internal/directory/ldap implements it.
package directory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"coffer/internal/authz"
)

// Errors of Authenticate. A caller must answer every ErrInvalidCredentials
// the same way, whatever its Reason: telling a wrong password from an
// unknown user tells a guesser which accounts exist.
var (
	// ErrInvalidCredentials: wrong password, unknown or disabled user, or a
	// username or password that is refused before asking (empty, NUL).
	ErrInvalidCredentials = errors.New("invalid username or password")
	// ErrUnavailable: the directory cannot be reached or refuses the
	// service account; nothing is known about the user.
	ErrUnavailable = errors.New("directory unavailable")
)

// Reasons, for the audit trail and logs only (never for the client).
const (
	ReasonWrongPassword = "wrong_password"
	ReasonUnknownUser   = "unknown_user"
	ReasonDisabled      = "disabled"
	ReasonBadInput      = "bad_input"
	ReasonAmbiguous     = "ambiguous_user"
	ReasonNoGroup       = "no_mapped_group"
)

// Error is an ErrInvalidCredentials with its reason.
type Error struct {
	Reason string
	Err    error // ErrInvalidCredentials
}

func (e *Error) Error() string { return e.Err.Error() + " (" + e.Reason + ")" }
func (e *Error) Unwrap() error { return e.Err }

// Refused returns an ErrInvalidCredentials with reason.
func Refused(reason string) error { return &Error{Reason: reason, Err: ErrInvalidCredentials} }

// ReasonOf is the reason of an ErrInvalidCredentials, or "".
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// Identity is an authenticated person.
type Identity struct {
	User   string   // the entry's name (CanonicalUser): principals are "ldap:" + User
	DN     string   // the entry's distinguished name
	Groups []string // DNs of the groups the directory says they are in
}

// Directory checks people's passwords. The password is only read; the
// caller zeroes it afterwards.
type Directory interface {
	Authenticate(ctx context.Context, user string, password []byte) (Identity, error)
}

// CanonicalUser is a login name as Coffer compares it (principals,
// throttles): NFKC, lower-cased, spaces trimmed and runs of them made one,
// close to how LDAP matches names (caseIgnoreMatch ignores case and
// insignificant spaces), so that spelling a name differently makes neither
// another person nor a fresh throttle bucket.
func CanonicalUser(user string) string {
	return strings.Join(strings.Fields(strings.ToLower(norm.NFKC.String(user))), " ")
}

// MaxUser and MaxPassword bound what is sent to a directory.
const (
	MaxUser     = 256
	MaxPassword = 1024
)

// CheckInput refuses, before any directory is asked, a username that is
// empty, too long, not UTF-8 or holds control characters (NUL included),
// and a password that is empty (an LDAP bind with an empty password is an
// unauthenticated bind, which succeeds without checking anything), too long
// or holds a NUL. It names the field, never the value.
func CheckInput(user string, password []byte) error {
	switch {
	case user == "":
		return errors.New("username: required")
	case len(user) > MaxUser:
		return fmt.Errorf("username: at most %d bytes", MaxUser)
	case !utf8.ValidString(user):
		return errors.New("username: not UTF-8")
	case strings.ContainsFunc(user, unicode.IsControl):
		return errors.New("username: control characters (NUL included) are not allowed")
	case len(password) == 0:
		return errors.New("password: required (an empty password would be an unauthenticated bind)")
	case len(password) > MaxPassword:
		return fmt.Errorf("password: at most %d bytes", MaxPassword)
	case slices.Contains(password, 0):
		return errors.New("password: NUL is not allowed")
	}
	return nil
}

// Mapping maps group DNs, compared case-insensitively by their parsed
// form (see NormalizeDN), to grants.
type Mapping map[string]authz.Grant

// Grants are the grants of every group in groups that the mapping names,
// each once, in the order of groups: several groups combine as the union of
// their grants, each grant keeping its own scope (authz.Principal.Grants).
// None means no access.
func (m Mapping) Grants(groups []string) []authz.Grant {
	var out []authz.Grant
	for _, g := range groups {
		n, err := NormalizeDN(g)
		if err != nil {
			continue
		}
		if gr, ok := m[n]; ok && !slices.Contains(out, gr) {
			out = append(out, gr)
		}
	}
	return out
}
