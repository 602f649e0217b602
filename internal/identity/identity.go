// Package identity is Coffer's built-in certificate authority and the mutual
// TLS identities it issues: the server's certificate and the short-lived
// client certificates of agents.
//
// # Certificates
//
// The CA ([LoadOrCreateCA]) is an ECDSA P-256 key and a self-signed
// certificate valid for ten years, kept in the server's data directory. It
// signs the server certificate ([CA.LoadOrIssueServerCert]) and agent
// certificates ([CA.SignAgent], [CA.SignAgentCSR]). An agent certificate
// names the agent in a URI SAN, coffer://agent/<name>, and is good for
// client authentication only; the CA sets every name and extension itself and ignores what the
// certificate request asks for.
//
// # Agent labels
//
// An agent certificate also carries the labels an admin gave the agent (on
// its join token; the server keeps them in the fleet record and signs
// every renewal with the record's labels, never with anything from the
// request). They sit in the standard subjectDirectoryAttributes extension
// (OID 2.5.29.9, RFC 5280 section 4.2.1.8, non-critical) as one attribute of
// type [AgentLabelsOID], 2.25.150156205370609841510767535883487399430.1:
// Coffer's arc under 2.25 (ITU-T X.667: the UUID
// 70f70881-7dcb-45cb-95f2-ba222d79ce06 read as an integer, which needs no
// registration), element 1. The attribute has one value:
//
//	AgentLabels ::= SEQUENCE SIZE (1..64) OF SEQUENCE {
//	    key   UTF8String,   -- strictly ascending, non-empty
//	    value UTF8String }
//
// An agent without labels gets no such extension. The attribute type, and
// not a private extension of that OID, is there because Go's crypto/x509
// refuses to parse any certificate with an extension OID arc of 2^31 or more
// ("malformed extension OID field"), and every UUID arc is larger; inside
// the extension's value the OID is ours to read. [AgentLabels] reads the
// labels back; the fleet refuses a certificate whose labels differ from the
// record.
//
// # TLS
//
// Both ends speak TLS 1.3 only. The server ([ServerTLSConfig]) verifies a
// client certificate when one is given (people authenticate with tokens,
// agents with certificates) and each route checks what it needs, with
// [PeerAgentName] for agent routes. Agents ([ClientTLSConfig]) trust only
// the pinned Coffer CA, never the system roots.
//
// # Agent identity and renewal
//
// An agent makes its key and request ([NewAgentKey], [NewCSR]), keeps the
// issued certificate on disk ([SaveAgentIdentity], [LoadAgentIdentity]) and
// renews it at about two thirds of its lifetime with a [Renewer], which also
// serves it to the TLS stack.
//
// # Files
//
// Private keys are PKCS#8 PEM files of mode 0600; loading refuses a key file
// that its group or others may read. Certificates are PEM files of mode 0644.
// Files are replaced atomically (temporary file, fsync, rename); CA files are
// never overwritten.
package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

var (
	// ErrInvalidAgentName is returned (wrapped) for an agent name that does
	// not match the pattern of ValidateAgentName.
	ErrInvalidAgentName = errors.New("invalid agent name")
	// ErrNotAgentCert is returned (wrapped) for a certificate that is not an
	// agent certificate issued by SignAgentCSR, and for a TLS peer that
	// presented no verified certificate.
	ErrNotAgentCert = errors.New("not an agent certificate")
	// ErrBadCSR is returned (wrapped) for a certificate request that cannot
	// be parsed, is not signed by its key, or holds a key of a refused type.
	ErrBadCSR = errors.New("bad certificate request")
	// ErrFiles is returned (wrapped) for identity files that are missing,
	// damaged, readable by others, or do not belong together.
	ErrFiles = errors.New("bad identity files")
)

// MaxAgentNameLen is the longest agent name accepted, in bytes.
const MaxAgentNameLen = 253

// An agent name is a host-name-like single element: lower-case letters and
// digits, with '.', '_' and '-' inside.
var agentNamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$`)

// ValidateAgentName reports whether name can name an agent, such as
// "node-7.eu-west".
func ValidateAgentName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidAgentName)
	case len(name) > MaxAgentNameLen:
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidAgentName, MaxAgentNameLen)
	case !agentNamePattern.MatchString(name):
		return fmt.Errorf("%w %q: use lower-case letters, digits, and '.', '_', '-' inside", ErrInvalidAgentName, name)
	}
	return nil
}

const (
	agentCNPrefix = "coffer-agent:"
	agentScheme   = "coffer"
	agentHost     = "agent"
)

// agentURI is the URI SAN that names an agent: coffer://agent/<name>.
func agentURI(name string) *url.URL {
	return &url.URL{Scheme: agentScheme, Host: agentHost, Path: "/" + name}
}

// agentNameFromURI is the inverse of agentURI; it accepts nothing else.
func agentNameFromURI(u *url.URL) (string, error) {
	if u == nil || u.Scheme != agentScheme || u.Host != agentHost || u.User != nil || u.Opaque != "" ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawPath != "" || !strings.HasPrefix(u.Path, "/") {
		return "", fmt.Errorf("%w: URI is not of the form coffer://agent/<name>", ErrNotAgentCert)
	}
	name := u.Path[1:]
	if err := ValidateAgentName(name); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotAgentCert, err)
	}
	return name, nil
}

// AgentName returns the agent named by cert, an agent certificate made by
// SignAgentCSR. It does not verify the certificate's signature or validity
// period: use it on a certificate the TLS stack has verified (see
// PeerAgentName). It fails with ErrNotAgentCert for any other certificate,
// such as the server's.
func AgentName(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", fmt.Errorf("%w: no certificate", ErrNotAgentCert)
	}
	if cert.IsCA || !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		return "", fmt.Errorf("%w: not a client-only certificate", ErrNotAgentCert)
	}
	if len(cert.URIs) != 1 {
		return "", fmt.Errorf("%w: has %d URI names, want 1", ErrNotAgentCert, len(cert.URIs))
	}
	name, err := agentNameFromURI(cert.URIs[0])
	if err != nil {
		return "", err
	}
	if cert.Subject.CommonName != agentCNPrefix+name {
		return "", fmt.Errorf("%w: common name does not match URI name %q", ErrNotAgentCert, name)
	}
	return name, nil
}

// PeerAgentName returns the name of the agent at the other end of a TLS
// connection accepted with ServerTLSConfig. It fails with ErrNotAgentCert
// when the peer sent no certificate (a person with a token) or a
// certificate that is not an agent's.
func PeerAgentName(cs *tls.ConnectionState) (string, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", fmt.Errorf("%w: peer presented no verified client certificate", ErrNotAgentCert)
	}
	return AgentName(cs.VerifiedChains[0][0])
}
