package seal

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"coffer/internal/privfile"
)

// KeySize is the size of a master key in bytes (AES-256). A key file holds
// exactly this many raw random bytes and nothing else, e.g. as made by
// CreateKeyFile or `head -c 32 /dev/urandom > master.key && chmod 600 master.key`.
const KeySize = 32

var (
	// ErrKeyFile is returned (wrapped) when a master key file is missing,
	// has the wrong size, or is readable by others than its owner.
	ErrKeyFile = errors.New("bad master key file")
	// ErrClosed is returned (wrapped) when a closed LocalKey is used.
	ErrClosed = errors.New("master key is closed")
)

// Domain strings: the wrapping AAD and the key-id derivation.
const (
	wrapAAD   = "coffer/seal/dek/v1"
	keyIDInfo = "coffer/seal/key-id/v1"
)

// wrapVersion is the first byte of a wrapped DEK made by LocalKey:
// wrapVersion || 12-byte nonce || AES-256-GCM(dek) with tag.
const wrapVersion byte = 1

// LocalKey is a master key held in the server's memory, loaded from a key
// file. It wraps data keys with AES-256-GCM under a random nonce. It is safe
// for concurrent use; Close zeroes the key.
type LocalKey struct {
	mu  sync.RWMutex
	key []byte // nil once closed
	id  string
}

var _ KeyWrapper = (*LocalKey)(nil)

// NewLocalKey returns a LocalKey holding a copy of key, which must be
// KeySize bytes.
func NewLocalKey(key []byte) (*LocalKey, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("%w: master key is %d bytes, want %d", ErrKeyFile, len(key), KeySize)
	}
	return &LocalKey{key: append([]byte(nil), key...), id: keyID(key)}, nil
}

// keyID is the hex of the first 8 bytes of SHA-256 over a check value
// derived from the key with HMAC-SHA-256; it reveals nothing about the key.
func keyID(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(keyIDInfo))
	check := m.Sum(nil)
	sum := sha256.Sum256(check)
	clear(check)
	return hex.EncodeToString(sum[:8])
}

// LoadKeyFile reads a master key file: exactly KeySize raw bytes in a
// regular file that only its owner may read or write (mode 0600 or 0400).
func LoadKeyFile(path string) (*LocalKey, error) {
	f, fi, err := privfile.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist (create a master key first)", ErrKeyFile, path)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	defer f.Close()
	if fi.Size() != KeySize {
		return nil, fmt.Errorf("%w: %s is %d bytes; a master key file holds exactly %d raw random bytes",
			ErrKeyFile, path, fi.Size(), KeySize)
	}
	buf := make([]byte, KeySize+1) // one more to notice a file that grew
	defer clear(buf)
	n, err := io.ReadFull(f, buf)
	switch {
	case n == KeySize && errors.Is(err, io.ErrUnexpectedEOF):
		// exactly KeySize bytes, then end of file
	case err == nil || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return nil, fmt.Errorf("%w: %s changed size while being read", ErrKeyFile, path)
	default:
		return nil, fmt.Errorf("%w: read %s: %w", ErrKeyFile, path, err)
	}
	return NewLocalKey(buf[:KeySize])
}

// CreateKeyFile makes a new random master key and writes it to path with
// mode 0600, syncing the file and its directory. It never overwrites: if
// path exists it returns an error wrapping fs.ErrExist. A missing parent
// directory is created with mode 0700.
func CreateKeyFile(path string) (*LocalKey, error) {
	key := make([]byte, KeySize)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate master key: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create master key file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create master key file: %s already exists, refusing to overwrite it: %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("create master key file: %w", err)
	}
	err = writeSync(f, key)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("create master key file %s: %w", path, err)
	}
	return NewLocalKey(key)
}

func writeSync(f *os.File, b []byte) error {
	if err := f.Chmod(0o600); err != nil { // whatever the umask
		return err
	}
	if _, err := f.Write(b); err != nil {
		return err
	}
	return f.Sync()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// KeyID implements KeyWrapper.
func (k *LocalKey) KeyID() string { return k.id }

// Wrap implements KeyWrapper.
func (k *LocalKey) Wrap(_ context.Context, dek []byte) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.key == nil {
		return nil, ErrClosed
	}
	aead, err := newGCM(k.key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+aead.NonceSize(), 1+aead.NonceSize()+len(dek)+aead.Overhead())
	out[0] = wrapVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("generate nonce: %w", err)
	}
	return aead.Seal(out, out[1:], dek, []byte(wrapAAD)), nil
}

// Unwrap implements KeyWrapper.
func (k *LocalKey) Unwrap(_ context.Context, wrapped []byte) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.key == nil {
		return nil, ErrClosed
	}
	aead, err := newGCM(k.key)
	if err != nil {
		return nil, err
	}
	hdr := 1 + aead.NonceSize()
	if len(wrapped) < hdr+aead.Overhead() {
		return nil, fmt.Errorf("%w: wrapped data key is too short", ErrDecrypt)
	}
	if wrapped[0] != wrapVersion {
		return nil, fmt.Errorf("%w: unknown wrapped data key format %d", ErrDecrypt, wrapped[0])
	}
	dek, err := aead.Open(nil, wrapped[1:hdr], wrapped[hdr:], []byte(wrapAAD))
	if err != nil {
		return nil, fmt.Errorf("%w: data key was not wrapped under master key %s, or is damaged", ErrDecrypt, k.id)
	}
	return dek, nil
}

// Close zeroes the key. Later Wrap and Unwrap calls return ErrClosed.
func (k *LocalKey) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	clear(k.key)
	k.key = nil
}
