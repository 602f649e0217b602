package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// CA file names in the CA directory.
const (
	CACertFile = "ca.pem"     // mode 0644
	CAKeyFile  = "ca-key.pem" // mode 0600
)

// Validity periods.
const (
	CAValidity          = 10 * 365 * 24 * time.Hour
	DefaultAgentCertTTL = 24 * time.Hour      // SignAgentCSR with ttl <= 0
	DefaultServerTTL    = 90 * 24 * time.Hour // LoadOrIssueServerCert with ttl <= 0
)

// backdate sets NotBefore = now - backdate, to allow for clock skew.
const backdate = time.Minute

// CA is Coffer's certificate authority.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte // Cert in PEM, as agents pin it
}

// LoadOrCreateCA loads the CA from dir (ca.pem and ca-key.pem) or, when
// neither file exists, creates a new one there (creating dir with mode 0700
// if needed) and reports created. It never overwrites a file: when only one
// of the two files exists, or they do not belong together, it returns an
// error wrapping ErrFiles that says what to do.
func LoadOrCreateCA(dir string) (ca *CA, created bool, err error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	hasCert, err := exists(certPath)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %w", ErrFiles, err)
	}
	hasKey, err := exists(keyPath)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %w", ErrFiles, err)
	}
	switch {
	case hasCert && hasKey:
		ca, err = loadCA(certPath, keyPath, time.Now())
		return ca, false, err
	case hasCert:
		return nil, false, fmt.Errorf("%w: found %s but not %s: restore the CA key from a backup, "+
			"or move %s away to create a new CA (every agent must then enroll again)", ErrFiles, certPath, keyPath, certPath)
	case hasKey:
		return nil, false, fmt.Errorf("%w: found %s but not %s: restore the CA certificate from a backup, "+
			"or move %s away to create a new CA (every agent must then enroll again)", ErrFiles, keyPath, certPath, keyPath)
	}
	ca, err = createCA(dir, certPath, keyPath, time.Now())
	return ca, err == nil, err
}

func loadCA(certPath, keyPath string, now time.Time) (*CA, error) {
	cert, err := readCertFile(certPath)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%w: %s is not a CA certificate", ErrFiles, certPath)
	}
	key, err := readKeyFile(keyPath)
	if err != nil {
		return nil, err
	}
	if !sameKey(key, cert.PublicKey) {
		return nil, fmt.Errorf("%w: %s and %s do not belong together (the key does not match the certificate); "+
			"restore the right pair from a backup", ErrFiles, keyPath, certPath)
	}
	if now.After(cert.NotAfter) {
		return nil, fmt.Errorf("%w: CA certificate %s expired on %s; a new CA is needed and every agent must enroll again",
			ErrFiles, certPath, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM(cert.Raw)}, nil
}

func createCA(dir, certPath, keyPath string, now time.Time) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	ca, kp, err := newCA(now)
	if err != nil {
		return nil, err
	}
	defer clear(kp)
	// Key first: a crash in between leaves a lone key, which LoadOrCreateCA
	// reports rather than replaces.
	if err := writeFile(keyPath, kp, 0o600, true); err != nil {
		return nil, fmt.Errorf("write CA key: %w", err)
	}
	if err := writeFile(certPath, ca.CertPEM, 0o644, true); err != nil {
		return nil, fmt.Errorf("write CA certificate: %w", err)
	}
	return ca, nil
}

// newCA makes a new CA in memory; it returns its key as PKCS#8 PEM too,
// which the caller must clear.
func newCA(now time.Time) (*CA, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Coffer CA", Organization: []string{"Coffer"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true, // signs leaves only
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA certificate: %w", err)
	}
	kp, err := keyPEM(key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA key: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM(der)}, kp, nil
}

// SignAgentCSR issues a client certificate for agent agentName to the key
// of the certificate request csrDER (DER), valid for ttl (DefaultAgentCertTTL
// when ttl <= 0; never past the CA's own expiry), with no labels. See
// SignAgent.
func (ca *CA) SignAgentCSR(csrDER []byte, agentName string, ttl time.Duration) (certDER []byte, err error) {
	return ca.signAgent(csrDER, AgentCertOptions{Name: agentName, TTL: ttl}, time.Now())
}

// AgentCertOptions is what the CA puts into an agent certificate besides
// the request's public key.
type AgentCertOptions struct {
	Name   string            // the agent's name (ValidateAgentName)
	Labels map[string]string // the agent's labels, from the fleet record; nil: none
	TTL    time.Duration     // <= 0: DefaultAgentCertTTL; never past the CA's expiry
}

// SignAgent issues a client certificate to the key of the certificate
// request csrDER (DER). It checks the request (CheckAgentCSR) and ignores
// everything else it asks for: the certificate has common name
// "coffer-agent:<name>", the single URI SAN coffer://agent/<name>,
// client-auth usage only, a random 128-bit serial number, starts one minute
// in the past, and carries o.Labels (if any) as described in the package
// documentation, never labels from the request.
func (ca *CA) SignAgent(csrDER []byte, o AgentCertOptions) (certDER []byte, err error) {
	return ca.signAgent(csrDER, o, time.Now())
}

// CheckAgentCSR checks a certificate request the way the CA does before it
// signs one: it parses, its signature is good, and its key is ECDSA P-256 or
// Ed25519. Errors wrap ErrBadCSR.
func CheckAgentCSR(csrDER []byte) error {
	_, err := parseAgentCSR(csrDER)
	return err
}

func parseAgentCSR(csrDER []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	switch pub := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ECDSA curve %s refused, use P-256", ErrBadCSR, pub.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("%w: key type %T refused, use ECDSA P-256 or Ed25519", ErrBadCSR, csr.PublicKey)
	}
	return csr, nil
}

func (ca *CA) signAgentCSR(csrDER []byte, name string, ttl time.Duration, now time.Time) ([]byte, error) {
	return ca.signAgent(csrDER, AgentCertOptions{Name: name, TTL: ttl}, now)
}

func (ca *CA) signAgent(csrDER []byte, o AgentCertOptions, now time.Time) ([]byte, error) {
	if err := ValidateAgentName(o.Name); err != nil {
		return nil, err
	}
	csr, err := parseAgentCSR(csrDER)
	if err != nil {
		return nil, err
	}
	ext, hasLabels, err := labelsExtension(o.Labels)
	if err != nil {
		return nil, err
	}
	ttl := o.TTL
	if ttl <= 0 {
		ttl = DefaultAgentCertTTL
	}
	tmpl, err := ca.leafTemplate(now, ttl)
	if err != nil {
		return nil, err
	}
	tmpl.Subject = pkix.Name{CommonName: agentCNPrefix + o.Name}
	tmpl.URIs = []*url.URL{agentURI(o.Name)}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if hasLabels {
		tmpl.ExtraExtensions = []pkix.Extension{ext}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign agent certificate: %w", err)
	}
	return der, nil
}

// leafTemplate is the common part of server and agent certificates.
func (ca *CA) leafTemplate(now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(ttl)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}, nil
}
