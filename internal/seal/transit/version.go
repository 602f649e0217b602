package transit

import (
	"strings"

	"coffer/internal/seal"
)

var _ seal.Rewrapper = (*Wrapper)(nil)

// KeyVersion implements seal.Rewrapper: the "vN" of a "vault:vN:..."
// ciphertext, or "" if wrapped is not one.
func (w *Wrapper) KeyVersion(wrapped []byte) string {
	if !validCiphertext(wrapped) {
		return ""
	}
	s := strings.TrimPrefix(string(wrapped), "vault:")
	v, _, _ := strings.Cut(s, ":")
	return v
}
