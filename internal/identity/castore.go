package identity

import (
	"crypto/x509"
	"fmt"
	"time"
)

// NewCA makes a new CA in memory, for a CA kept elsewhere than in files
// (several servers on a shared store keep it there, the key sealed). It
// returns the key as PKCS#8 PEM, which the caller must clear.
func NewCA() (ca *CA, keyPEM []byte, err error) { return newCA(time.Now()) }

// ParseCA loads a CA from its certificate and key in PEM, with the checks
// LoadOrCreateCA makes of its files. Errors wrap ErrFiles.
func ParseCA(certPEMBytes, keyPEMBytes []byte) (*CA, error) {
	cert, err := parseCertPEM(certPEMBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: CA certificate: %w", ErrFiles, err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%w: not a CA certificate", ErrFiles)
	}
	key, err := parseKeyPEM(keyPEMBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: CA key: %w", ErrFiles, err)
	}
	if !sameKey(key, cert.PublicKey) {
		return nil, fmt.Errorf("%w: the CA key does not match the CA certificate", ErrFiles)
	}
	if time.Now().After(cert.NotAfter) {
		return nil, fmt.Errorf("%w: CA certificate expired on %s; a new CA is needed and every agent must enroll again",
			ErrFiles, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM(cert.Raw)}, nil
}

// KeyPEM returns the CA's private key as PKCS#8 PEM, for keeping it
// elsewhere (sealed); the caller must clear it.
func (ca *CA) KeyPEM() ([]byte, error) { return keyPEM(ca.Key) }
