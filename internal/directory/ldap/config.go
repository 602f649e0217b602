package ldap

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"coffer/internal/authz"
	"coffer/internal/directory"
)

// Schemas: what the defaults assume of the directory.
const (
	SchemaOpenLDAP = "openldap"
	SchemaAD       = "ad"
)

// Filters the defaults use.
const (
	// InChainRule is LDAP_MATCHING_RULE_IN_CHAIN (Active Directory, Samba
	// AD): member:<rule>:=<dn> matches groups the DN is in through any
	// number of nested groups.
	InChainRule = "1.2.840.113556.1.4.1941"
	// ADDisabledFilter matches an AD account with ACCOUNTDISABLE (0x2) set
	// in userAccountControl (LDAP_MATCHING_RULE_BIT_AND).
	ADDisabledFilter = "(userAccountControl:1.2.840.113556.1.4.803:=2)"
	// OpenLDAPDisabledFilter matches an entry locked by slapd's ppolicy
	// overlay (or by hand: pwdAccountLockedTime: 000001010000Z locks for
	// good).
	OpenLDAPDisabledFilter = "(pwdAccountLockedTime=*)"
)

// Defaults.
const (
	DefaultSessionTTL = 8 * time.Hour
	DefaultTimeout    = 10 * time.Second
)

// Config is the ldap: section of coffer-server's configuration.
//
//	ldap:
//	  url: ldaps://dc1.acme.com:636       # or ldap://… with start_tls: true
//	  ca_file: /etc/coffer/ldap-ca.pem
//	  bind_dn: cn=coffer,ou=services,dc=acme,dc=com
//	  bind_password_file: /etc/coffer/ldap-bind-password
//	  user_base: ou=people,dc=acme,dc=com
//	  user_filter: (uid={user})
//	  group_base: ou=groups,dc=acme,dc=com
//	  group_filter: (member={dn})
//	  groups:
//	    cn=payments-ops,ou=groups,dc=acme,dc=com: {role: operator, scope: "payments/*"}
type Config struct {
	URL      string `yaml:"url"`
	Insecure bool   `yaml:"insecure"`  // allows plain ldap:// without StartTLS (tests only)
	StartTLS bool   `yaml:"start_tls"` // ldap:// upgraded with StartTLS
	CAFile   string `yaml:"ca_file"`   // PEM; default the system roots
	// Schema picks the defaults: "openldap" (default) or "ad".
	Schema           string `yaml:"schema"`
	BindDN           string `yaml:"bind_dn"`
	BindPasswordFile string `yaml:"bind_password_file"`
	UserBase         string `yaml:"user_base"`
	// UserFilter finds the user's entry; {user} is the escaped login name.
	// Default (uid={user}), or (sAMAccountName={user}) with schema ad.
	UserFilter string `yaml:"user_filter"`
	// UserAttribute of the user's entry names the person in principals
	// (ldap:<value>, lower-cased), whatever spelling they logged in with.
	// Default uid, or sAMAccountName with schema ad.
	UserAttribute string `yaml:"user_attribute"`
	// DisabledFilter, matched against the user's entry, refuses the login.
	// Default (pwdAccountLockedTime=*), or the ACCOUNTDISABLE bit with
	// schema ad; "none" turns the check off.
	DisabledFilter string `yaml:"disabled_filter"`
	// GroupBase and GroupFilter find the user's groups: {dn} is the user's
	// escaped DN, {user} the escaped login name, e.g. (member={dn}) or
	// (memberUid={user}). Without a GroupFilter, the user entry's
	// GroupAttribute (default memberOf) lists them.
	GroupBase      string `yaml:"group_base"`
	GroupFilter    string `yaml:"group_filter"`
	GroupAttribute string `yaml:"group_attribute"`
	// NestedGroups (Active Directory) finds groups through nested groups:
	// the group filter becomes (member:1.2.840.113556.1.4.1941:={dn}).
	NestedGroups bool `yaml:"nested_groups"`
	// Groups maps group DNs to grants: {role: operator, scope: "payments/*"}.
	Groups     map[string]authz.Grant `yaml:"groups"`
	SessionTTL time.Duration          `yaml:"session_ttl"` // default 8h
	Timeout    time.Duration          `yaml:"timeout"`     // per directory operation, default 10s
}

// ErrConfig is returned (wrapped) by Validate.
var ErrConfig = errors.New("invalid ldap config")

func bad(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
}

// Validate checks c and fills in the defaults. Its errors name the key.
func (c *Config) Validate() error {
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		return bad("url: required (ldaps://host:636, or ldap://host:389 with start_tls: true)")
	case err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil:
		return bad("url %q: want ldaps://host[:port] or ldap://host[:port]", c.URL)
	case u.Scheme != "ldap" && u.Scheme != "ldaps":
		return bad("url %q: scheme must be ldaps or ldap", c.URL)
	case u.Scheme == "ldaps" && c.StartTLS:
		return bad("start_tls: an ldaps:// url is TLS already")
	case u.Scheme == "ldap" && !c.StartTLS && !c.Insecure:
		return bad("url %q: plain ldap:// sends passwords in the clear: use ldaps://, or start_tls: true (insecure: true allows it, for tests only)", c.URL)
	}
	switch c.Schema {
	case "":
		c.Schema = SchemaOpenLDAP
	case SchemaOpenLDAP, SchemaAD:
	default:
		return bad("schema %q: want openldap or ad", c.Schema)
	}
	if c.BindDN == "" {
		return bad("bind_dn: required (the service account that searches for users)")
	}
	if _, err := goldap.ParseDN(c.BindDN); err != nil {
		return bad("bind_dn %q: %v", c.BindDN, err)
	}
	if c.BindPasswordFile == "" {
		return bad("bind_password_file: required")
	}
	if c.UserBase == "" {
		return bad("user_base: required")
	}
	if _, err := goldap.ParseDN(c.UserBase); err != nil {
		return bad("user_base %q: %v", c.UserBase, err)
	}
	if c.UserFilter == "" {
		c.UserFilter = "(uid={user})"
		if c.Schema == SchemaAD {
			c.UserFilter = "(sAMAccountName={user})"
		}
	}
	if c.UserAttribute == "" {
		c.UserAttribute = "uid"
		if c.Schema == SchemaAD {
			c.UserAttribute = "sAMAccountName"
		}
	}
	if !attrName.MatchString(c.UserAttribute) {
		return bad("user_attribute %q: an attribute name", c.UserAttribute)
	}
	if c.GroupAttribute != "" && !attrName.MatchString(c.GroupAttribute) {
		return bad("group_attribute %q: an attribute name", c.GroupAttribute)
	}
	if !strings.Contains(c.UserFilter, "{user}") {
		return bad("user_filter %q: must contain {user}", c.UserFilter)
	}
	if err := checkFilter(c.UserFilter); err != nil {
		return bad("user_filter %q: %v", c.UserFilter, err)
	}
	switch c.DisabledFilter {
	case "":
		c.DisabledFilter = OpenLDAPDisabledFilter
		if c.Schema == SchemaAD {
			c.DisabledFilter = ADDisabledFilter
		}
	case "none":
	default:
		if err := checkFilter(c.DisabledFilter); err != nil {
			return bad("disabled_filter %q: %v", c.DisabledFilter, err)
		}
	}
	if nested := "(member:" + InChainRule + ":={dn})"; c.NestedGroups {
		if c.GroupFilter != "" && c.GroupFilter != nested {
			return bad("nested_groups: sets the group filter itself; remove group_filter")
		}
		c.GroupFilter = nested
	}
	if c.GroupFilter != "" {
		if c.GroupBase == "" {
			return bad("group_base: required with group_filter or nested_groups")
		}
		if !strings.Contains(c.GroupFilter, "{dn}") && !strings.Contains(c.GroupFilter, "{user}") {
			return bad("group_filter %q: must contain {dn} or {user}", c.GroupFilter)
		}
		if err := checkFilter(c.GroupFilter); err != nil {
			return bad("group_filter %q: %v", c.GroupFilter, err)
		}
		if c.GroupAttribute != "" {
			return bad("group_attribute: only without group_filter (groups come from the search)")
		}
	} else if c.GroupAttribute == "" {
		c.GroupAttribute = "memberOf"
	}
	if c.GroupBase != "" {
		if _, err := goldap.ParseDN(c.GroupBase); err != nil {
			return bad("group_base %q: %v", c.GroupBase, err)
		}
	}
	if len(c.Groups) == 0 {
		return bad("groups: map at least one group DN to a role (a login in no mapped group gets no access)")
	}
	keys := make([]string, 0, len(c.Groups))
	for k := range c.Groups {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	seen := map[string]string{}
	for _, k := range keys {
		g := c.Groups[k]
		n, err := directory.NormalizeDN(k)
		if err != nil {
			return bad("groups: %v", err)
		}
		if o, dup := seen[n]; dup {
			return bad("groups: %q and %q are the same group (DNs compare case-insensitively)", o, k)
		}
		seen[n] = k
		r, err := authz.ParseRole(string(g.Role))
		if err != nil || r == authz.Agent {
			return bad("groups[%q].role %q: want admin, operator, auditor or viewer", k, g.Role)
		}
		if strings.ContainsAny(strings.TrimSuffix(g.Scope, "*"), "*?[") {
			return bad("groups[%q].scope %q: a name prefix such as payments/* (one trailing * only)", k, g.Scope)
		}
	}
	switch {
	case c.SessionTTL == 0:
		c.SessionTTL = DefaultSessionTTL
	case c.SessionTTL < time.Minute || c.SessionTTL > 7*24*time.Hour:
		return bad("session_ttl %s: must be 1m to 168h", c.SessionTTL)
	}
	switch {
	case c.Timeout == 0:
		c.Timeout = DefaultTimeout
	case c.Timeout < 100*time.Millisecond || c.Timeout > time.Minute:
		return bad("timeout %s: must be 100ms to 1m", c.Timeout)
	}
	return nil
}

var attrName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{0,63}$`)

// checkFilter compiles f with its placeholders filled.
func checkFilter(f string) error {
	_, err := goldap.CompileFilter(strings.NewReplacer("{user}", "x", "{dn}", "cn=x").Replace(f))
	return err
}

// Mapping is the groups map with its DNs normalized, scopes normalized.
func (c *Config) Mapping() directory.Mapping {
	m := directory.Mapping{}
	for k, g := range c.Groups {
		n, err := directory.NormalizeDN(k)
		if err != nil {
			continue // Validate refused it
		}
		m[n] = authz.Grant{Role: g.Role, Scope: authz.NormalizeScope(g.Scope)}
	}
	return m
}
