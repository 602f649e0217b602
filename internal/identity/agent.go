package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
)

// Agent identity file names.
const (
	AgentCertFile = "agent.pem"     // mode 0644
	AgentKeyFile  = "agent-key.pem" // mode 0600
)

// nextSuffix marks the staged files of SaveAgentIdentity.
const nextSuffix = ".next"

// NewAgentKey returns a new ECDSA P-256 key for an agent.
func NewAgentKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// NewCSR returns a DER certificate request signed by key for agentName.
// The CA ignores the names it carries; they only help a person reading it.
func NewCSR(key crypto.Signer, agentName string) ([]byte, error) {
	if err := ValidateAgentName(agentName); err != nil {
		return nil, err
	}
	tmpl := &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: agentCNPrefix + agentName},
		URIs:    []*url.URL{agentURI(agentName)},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	return der, nil
}

// SaveAgentIdentity writes an agent's certificate (DER) and key to dir as
// agent.pem (0644) and agent-key.pem (0600), creating dir with mode 0700 if
// needed. The key must belong to the certificate and the certificate must
// be an agent certificate.
//
// Each file is replaced atomically. Both are first written in full as
// staged ".next" files, then renamed key first; if a crash falls between the
// two renames, LoadAgentIdentity finishes the job.
func SaveAgentIdentity(dir string, certDER []byte, key *ecdsa.PrivateKey) error {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return fmt.Errorf("save agent identity: %w", err)
	}
	if _, err := AgentName(cert); err != nil {
		return fmt.Errorf("save agent identity: %w", err)
	}
	if key == nil || !sameKey(key, cert.PublicKey) {
		return fmt.Errorf("save agent identity: the key does not belong to the certificate")
	}
	kp, err := keyPEM(key)
	if err != nil {
		return fmt.Errorf("save agent identity: %w", err)
	}
	defer clear(kp)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save agent identity: %w", err)
	}
	certPath, keyPath := filepath.Join(dir, AgentCertFile), filepath.Join(dir, AgentKeyFile)
	steps := []func() error{
		func() error { return writeFile(keyPath+nextSuffix, kp, 0o600, false) },
		func() error { return writeFile(certPath+nextSuffix, certPEM(certDER), 0o644, false) },
		func() error { return os.Rename(keyPath+nextSuffix, keyPath) },
		func() error { return os.Rename(certPath+nextSuffix, certPath) },
		func() error { return syncDir(dir) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("save agent identity: %w", err)
		}
	}
	return nil
}

// LoadAgentIdentity reads the identity saved by SaveAgentIdentity from dir,
// with Leaf set. It fails with ErrFiles when a file is missing or damaged,
// the key file may be read by others, or the two do not belong together.
// It does not check the validity period: a Renewer reports expiry.
func LoadAgentIdentity(dir string) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, AgentCertFile), filepath.Join(dir, AgentKeyFile)
	c, err := loadAgentPair(certPath, keyPath)
	if !errors.Is(err, errMismatch) {
		return c, err
	}
	// A save may have stopped between its two renames: new key, old
	// certificate, new certificate staged. Finish it.
	staged, serr := loadAgentPair(certPath+nextSuffix, keyPath)
	if serr != nil {
		return tls.Certificate{}, err
	}
	if err := os.Rename(certPath+nextSuffix, certPath); err != nil {
		return tls.Certificate{}, fmt.Errorf("%w: complete an interrupted save: %w", ErrFiles, err)
	}
	return staged, syncDir(dir)
}

var errMismatch = errors.New("the key does not belong to the certificate")

func loadAgentPair(certPath, keyPath string) (tls.Certificate, error) {
	cert, err := readCertFile(certPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	if _, err := AgentName(cert); err != nil {
		return tls.Certificate{}, fmt.Errorf("%w: %s: %w", ErrFiles, certPath, err)
	}
	key, err := readKeyFile(keyPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	if !sameKey(key, cert.PublicKey) {
		return tls.Certificate{}, fmt.Errorf("%w: %s and %s: %w", ErrFiles, keyPath, certPath, errMismatch)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// ClientTLSConfig returns an agent's (or CLI's) TLS configuration: TLS 1.3
// only, trusting only the CA certificates in caPEM (the pinned Coffer CA,
// never the system roots), and presenting the certificate getCert returns
// (nil: none, as for a person with a token). ServerName is left for the
// caller or the dialer to set.
func ClientTLSConfig(caPEM []byte, getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) (*tls.Config, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := caPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != pemCert {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pinned CA: %w", err)
		}
		if !cert.IsCA {
			return nil, fmt.Errorf("pinned CA: certificate %q is not a CA certificate", cert.Subject.CommonName)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, errors.New("pinned CA: no certificate in PEM data")
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              pool,
		GetClientCertificate: getCert,
	}, nil
}
