package seal_test

import (
	"bytes"
	"testing"

	"coffer/internal/seal"
	"coffer/internal/seal/sealtest"
)

// TestLocalKeySuite runs the KeyWrapper suite that the KMS-backed master
// keys also pass against the local key file's wrapper.
func TestLocalKeySuite(t *testing.T) {
	k1, _ := seal.NewLocalKey(bytes.Repeat([]byte{1}, seal.KeySize))
	k2, _ := seal.NewLocalKey(bytes.Repeat([]byte{2}, seal.KeySize))
	defer k1.Close()
	defer k2.Close()
	sealtest.Run(t, k1, k2)
}
