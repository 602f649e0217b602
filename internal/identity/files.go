package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"

	"coffer/internal/privfile"
)

const (
	pemCert = "CERTIFICATE"
	pemKey  = "PRIVATE KEY"    // PKCS#8, as written
	pemEC   = "EC PRIVATE KEY" // SEC 1, also read
)

// writeFile writes data to path through a temporary file in the same
// directory (mode perm, fsync) that is then renamed over path, or, when
// exclusive is set, hard-linked to path so that an existing file is never
// replaced (the error then wraps fs.ErrExist). The directory is synced.
func writeFile(path string, data []byte, perm fs.FileMode, exclusive bool) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil || exclusive {
			_ = os.Remove(tmp)
		}
	}()
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if exclusive {
		err = os.Link(tmp, path)
	} else {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// exists reports whether path exists; errors other than "not found" are
// returned.
func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// readKeyFile reads a private key file, refusing one that its group or
// others may access.
func readKeyFile(path string) (crypto.Signer, error) {
	f, fi, err := privfile.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: private key: %w", ErrFiles, err)
	}
	defer f.Close()
	b := make([]byte, fi.Size())
	defer clear(b)
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrFiles, path, err)
	}
	key, err := parseKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrFiles, path, err)
	}
	return key, nil
}

// readCertFile reads the first certificate of a PEM file.
func readCertFile(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFiles, err)
	}
	cert, err := parseCertPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrFiles, path, err)
	}
	return cert, nil
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New("no CERTIFICATE PEM block")
		}
		if block.Type == pemCert {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCert, Bytes: der})
}

// keyPEM encodes key as PKCS#8 PEM. The caller should clear the result.
func keyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	defer clear(der)
	return pem.EncodeToMemory(&pem.Block{Type: pemKey, Bytes: der}), nil
}

func parseKeyPEM(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no private key PEM block")
	}
	defer clear(block.Bytes)
	var (
		key any
		err error
	)
	switch block.Type {
	case pemKey:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case pemEC:
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, errors.New("cannot parse private key") // the parser's text is not needed
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("private key type %T is not supported (want ECDSA or Ed25519)", key)
}

// sameKey reports whether pub is the public half of key.
func sameKey(key crypto.Signer, pub crypto.PublicKey) bool {
	p, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && p.Equal(pub)
}

// randomSerial returns a random positive 128-bit certificate serial number.
func randomSerial() (*big.Int, error) {
	b := make([]byte, 16)
	for {
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if n := new(big.Int).SetBytes(b); n.Sign() > 0 {
			return n, nil
		}
	}
}
