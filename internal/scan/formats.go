package scan

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// formatDetector recognises a secret by the structure of a whole file (a
// keystore) rather than by a pattern in its text. It returns a short
// description for the excerpt, which must not contain secret material.
type formatDetector func(data []byte) (string, bool)

// formats are the structural detectors a rule can name in "format".
var formats = map[string]formatDetector{
	"keystore": keystore,
}

// keystore recognises Java keystores (JKS, JCEKS) and PKCS#12 files that
// hold a private or secret key; trust stores (certificates only) are not
// secrets.
func keystore(data []byte) (string, bool) {
	if len(data) >= 12 {
		switch binary.BigEndian.Uint32(data) {
		case 0xFEEDFEED:
			return javaKeystore(data, "JKS")
		case 0xCECECECE:
			return javaKeystore(data, "JCEKS")
		}
	}
	return pkcs12(data)
}

// javaKeystore walks the entries of a JKS or JCEKS file: tag 1 is a private
// key, tag 2 a trusted certificate, tag 3 (JCEKS) a secret key.
func javaKeystore(data []byte, kind string) (string, bool) {
	version := binary.BigEndian.Uint32(data[4:])
	count := binary.BigEndian.Uint32(data[8:])
	if version != 1 && version != 2 || count > 1<<16 {
		return "", false
	}
	p := 12
	u32 := func() (uint32, bool) {
		if p+4 > len(data) {
			return 0, false
		}
		v := binary.BigEndian.Uint32(data[p:])
		p += 4
		return v, true
	}
	utf := func() (string, bool) {
		if p+2 > len(data) {
			return "", false
		}
		n := int(binary.BigEndian.Uint16(data[p:]))
		p += 2
		if p+n > len(data) {
			return "", false
		}
		s := data[p : p+n]
		p += n
		return string(s), true
	}
	skip := func(n uint32) bool {
		if uint64(p)+uint64(n) > uint64(len(data)) {
			return false
		}
		p += int(n)
		return true
	}
	cert := func() bool {
		if version == 2 {
			if _, ok := utf(); !ok {
				return false
			}
		}
		n, ok := u32()
		return ok && skip(n)
	}
	for range count {
		tag, ok := u32()
		if !ok {
			return "", false
		}
		alias, ok := utf()
		if !ok || !skip(8) { // timestamp
			return "", false
		}
		switch tag {
		case 1, 3:
			what := "private key"
			if tag == 3 {
				what = "secret key"
			}
			return fmt.Sprintf("%s keystore with a %s entry (alias %q)", kind, what, printable([]byte(alias[:min(len(alias), 40)]))), true
		case 2:
			if !cert() {
				return "", false
			}
		default:
			return "", false
		}
	}
	return "", false
}

// DER encodings of the PKCS#12 bag types that hold a key.
var (
	oidKeyBag         = []byte{0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x01}
	oidShroudedKeyBag = []byte{0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02}
	oidPKCS7Data      = []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01}
)

// pkcs12 recognises a PKCS#12 (.p12, .pfx) file whose key bag is visible:
// a DER SEQUENCE starting with version 3 and a PKCS#7 data content.
func pkcs12(data []byte) (string, bool) {
	if len(data) < 32 || data[0] != 0x30 {
		return "", false
	}
	// SEQUENCE length (short or long form), then INTEGER 3.
	i := 2
	if data[1]&0x80 != 0 {
		i += int(data[1] & 0x7f)
	}
	if i+3 > len(data) || !bytes.Equal(data[i:i+3], []byte{0x02, 0x01, 0x03}) {
		return "", false
	}
	head := data[i+3 : min(len(data), i+40)]
	if !bytes.Contains(head, oidPKCS7Data) {
		return "", false
	}
	if bytes.Contains(data, oidShroudedKeyBag) || bytes.Contains(data, oidKeyBag) {
		return "PKCS#12 keystore with a private key", true
	}
	return "", false
}

// checksums are the built-in token checksums a rule can name in "checksum".
var checksums = map[string]func([]byte) bool{
	"github": githubChecksum,
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// githubChecksum checks the last six characters of a GitHub (ghp_, gho_,
// ghu_, ghs_, ghr_) or npm (npm_) token: the CRC-32 of the 30 random
// characters before them, in base62.
func githubChecksum(tok []byte) bool {
	i := bytes.IndexByte(tok, '_')
	if i < 0 || len(tok)-i-1 != 36 {
		return false
	}
	body, sum := tok[i+1:len(tok)-6], tok[len(tok)-6:]
	return bytes.Equal(sum, []byte(base62Pad(crc32.ChecksumIEEE(body), 6)))
}

// base62Pad encodes v in base62, left-padded with '0' to width.
func base62Pad(v uint32, width int) string {
	b := make([]byte, width)
	for i := width - 1; i >= 0; i-- {
		b[i] = base62[v%62]
		v /= 62
	}
	return string(b)
}
