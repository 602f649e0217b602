package directory

import (
	"fmt"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// NormalizeDN is dn's canonical form for comparing: parsed (so spacing and
// escaping do not matter), attribute types and values lower-cased. LDAP
// compares group names case-insensitively (cn, ou, dc have caseIgnoreMatch),
// and Active Directory returns memberOf in its own case.
func NormalizeDN(dn string) (string, error) {
	d, err := ldap.ParseDN(dn)
	if err != nil {
		return "", fmt.Errorf("DN %q: %w", dn, err)
	}
	if len(d.RDNs) == 0 {
		return "", fmt.Errorf("DN %q: empty", dn)
	}
	for _, r := range d.RDNs {
		for _, a := range r.Attributes {
			a.Type = strings.ToLower(a.Type)
			a.Value = strings.ToLower(a.Value)
		}
	}
	return d.String(), nil
}
