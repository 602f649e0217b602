package scangen

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"strings"
)

// Token formats with a checksum get a valid one, as real tokens have.

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func base62Pad(v uint32, width int) string {
	b := make([]byte, width)
	for i := width - 1; i >= 0; i-- {
		b[i] = base62[v%62]
		v /= 62
	}
	return string(b)
}

// checksummed returns prefix + body (30 characters) + the CRC-32 of body in
// base62: the GitHub and npm token format.
func checksummed(prefix, body string) string {
	return prefix + body + base62Pad(crc32.ChecksumIEEE([]byte(body)), 6)
}

func (f forge) githubValid(kind string) string {
	return checksummed(kind+"_", "C0FFEE"+f.pick(alnum, 24))
}
func (f forge) npmValid() string { return checksummed("npm_", "C0FFEE"+f.pick(alnum, 24)) }

// Providers of the second layout: real formats, random bodies (no marker,
// as real tokens have none).
func (f forge) digitalocean() string { return "dop_v1_" + f.hex(64) }
func (f forge) tfcloud() string {
	return f.pick(alnum, 14) + ".atlasv1." + f.pick(b64url, 67)
}
func (f forge) doppler() string     { return "dp.st.prd." + f.pick(alnum, 40) }
func (f forge) pulumi() string      { return "pul-" + f.hex(40) }
func (f forge) grafanaSA() string   { return "glsa_" + f.pick(alnum, 32) + "_" + f.hex(8) }
func (f forge) huggingface() string { return "hf_" + f.pick(alnum[:52], 34) }
func (f forge) databricks() string  { return "dapi" + f.hex(32) }
func (f forge) alibaba() string     { return "LTAI" + f.pick(alnum, 20) }
func (f forge) newrelic() string    { return "NRAK-" + f.pick(alnum[:26]+digits, 27) }
func (f forge) sentry() string      { return "sntryu_" + f.hex(64) }
func (f forge) atlassian() string   { return "ATATT3xFfGF0" + f.pick(b64url, 180) + "=" + f.hex(8) }
func (f forge) linear() string      { return "lin_api_" + f.pick(alnum, 40) }
func (f forge) notion() string      { return "ntn_" + f.pick(digits, 11) + f.pick(alnum, 35) }
func (f forge) figma() string       { return "figd_" + f.pick(b64url, 40) }
func (f forge) postman() string     { return "PMAK-" + f.hex(24) + "-" + f.hex(34) }
func (f forge) whsec() string       { return "whsec_" + f.pick(alnum, 32) }
func (f forge) square() string      { return "EAAA" + f.pick(b64url, 60) }
func (f forge) telegram() string {
	return f.pick(digits, 10) + ":AA" + f.pick(b64url, 33)
}
func (f forge) discordHook() string {
	return "https://discord.com/api/webhooks/" + f.pick(digits, 19) + "/" + f.pick(b64url, 68)
}
func (f forge) teamsHook() string {
	return "https://corp.webhook.office.com/webhookb2/" + f.uuid() + "@" + f.uuid() + "/IncomingWebhook/" + f.hex(32) + "/" + f.uuid()
}
func (f forge) googleRefresh() string { return "1//0" + f.pick(b64url, 100) }
func (f forge) googleAccess() string  { return "ya29.a0" + f.pick(b64url, 150) }
func (f forge) azureClientSecret() string {
	return f.pick(alnum, 3) + f.pick(digits, 1) + "Q~" + f.pick(alnum+"_~.-", 34)
}
func (f forge) sasSig() string { return f.pick(alnum+"%", 43) + "%3D" }
func (f forge) mapbox() string {
	return "sk.eyJ1IjoiY29ycCIsImEiOiJ" + f.pick(b64url, 40) + "." + f.pick(b64url, 22)
}
func (f forge) jfrog() string      { return "cmVmdGtuOjAxOjE3" + f.pick(alnum, 48) }
func (f forge) sonar() string      { return "squ_" + f.hex(40) }
func (f forge) gitlabFeed() string { return "glft-" + f.pick(b64url, 20) }
func (f forge) slackApp() string {
	return "xapp-1-A" + f.pick(upper32, 10) + "-" + f.pick(digits, 13) + "-" + f.hex(64)
}
func (f forge) mailgun() string { return "key-" + f.hex(32) }
func (f forge) mailchimp() string {
	return f.hex(32) + "-us" + f.pick("123456789", 1) + f.pick(digits, 1)
}
func (f forge) heroku() string       { return "HRKU-AA" + f.pick(b64url, 58) }
func (f forge) rubygems() string     { return "rubygems_" + f.hex(48) }
func (f forge) cloudflareCA() string { return "v1.0-" + f.hex(24) + "-" + f.hex(146) }
func (f forge) supabase() string     { return "sbp_" + f.hex(40) }
func (f forge) planetscale() string  { return "pscale_tkn_" + f.pick(b64url, 43) }
func (f forge) contentful() string   { return "CFPAT-" + f.pick(b64url, 43) }
func (f forge) onepassword() string  { return "ops_eyJzaWduSW5BZGRyZXNzIjoi" + f.pick(b64url, 300) }
func (f forge) openaiProject() string {
	return "sk-proj-" + f.pick(b64url, 74) + "T3BlbkFJ" + f.pick(b64url, 74)
}
func (f forge) hvb() string            { return "hvb.AAAAAQ" + f.pick(b64url, 130) }
func (f forge) vaultLegacy() string    { return "s." + f.pick(alnum, 24) }
func (f forge) wireguard() string      { return f.b64(32) }
func (f forge) railsMasterKey() string { return f.hex(32) }
func (f forge) opaque(n int) string    { return f.pick(b64url, n) }

func (f forge) putty() string {
	var sb strings.Builder
	sb.WriteString("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: deploy@build\nPublic-Lines: 2\n")
	pub := f.b64(51)
	sb.WriteString(pub[:64] + "\n" + pub[64:] + "\n")
	sb.WriteString("Private-Lines: 1\n" + f.b64(48) + "\nPrivate-MAC: " + f.hex(64) + "\n")
	return sb.String()
}

func (f forge) openvpnKey() string {
	var sb strings.Builder
	sb.WriteString("#\n# 2048 bit OpenVPN static key\n#\n-----BEGIN OpenVPN Static key V1-----\n")
	for range 16 {
		sb.WriteString(f.hex(32) + "\n")
	}
	sb.WriteString("-----END OpenVPN Static key V1-----\n")
	return sb.String()
}

func (f forge) jwkPrivate() string {
	return fmt.Sprintf(`{"keys": [{"kty": "EC", "crv": "P-256", "use": "sig", "kid": "%s", "x": "%s", "y": "%s", "d": "%s"}]}`+"\n",
		f.hex(8), f.pick(b64url, 43), f.pick(b64url, 43), f.pick(b64url, 43))
}

func (f forge) jwkPublic() string {
	return fmt.Sprintf(`{"keys": [{"kty": "RSA", "use": "sig", "kid": "%s", "alg": "RS256", "n": "%s", "e": "AQAB"}]}`+"\n",
		f.hex(8), f.pick(b64url, 342))
}

// jks writes a Java keystore: with key, one private key entry and its
// certificate; without, a trust store of certificates.
func (f forge) jks(withKey bool, aliases ...string) []byte {
	var b bytes.Buffer
	u32 := func(v uint32) { _ = binary.Write(&b, binary.BigEndian, v) }
	utf := func(s string) { _ = binary.Write(&b, binary.BigEndian, uint16(len(s))); b.WriteString(s) }
	cert := func() {
		utf("X.509")
		c := append([]byte{0x30, 0x82, 0x03, 0x10}, f.bytes(780)...)
		u32(uint32(len(c)))
		b.Write(c)
	}
	u32(0xFEEDFEED)
	u32(2)
	u32(uint32(len(aliases)))
	for _, a := range aliases {
		if withKey {
			u32(1)
			utf(a)
			_ = binary.Write(&b, binary.BigEndian, uint64(1700000000000))
			key := append([]byte{0x30, 0x82, 0x05, 0x02}, f.bytes(1280)...)
			u32(uint32(len(key)))
			b.Write(key)
			u32(1)
			cert()
			continue
		}
		u32(2)
		utf(a)
		_ = binary.Write(&b, binary.BigEndian, uint64(1700000000000))
		cert()
	}
	b.Write(f.bytes(20)) // keyed SHA-1 over the store
	return b.Bytes()
}

// gitPack writes a version 2 pack of blobs (no deltas) and returns it with
// the ID of each blob.
func gitPack(blobs ...[]byte) ([]byte, []string) {
	var b bytes.Buffer
	b.WriteString("PACK")
	_ = binary.Write(&b, binary.BigEndian, uint32(2))
	_ = binary.Write(&b, binary.BigEndian, uint32(len(blobs)))
	var ids []string
	for _, blob := range blobs {
		size := len(blob)
		c := byte(3<<4) | byte(size&0x0f)
		size >>= 4
		for size > 0 {
			b.WriteByte(c | 0x80)
			c = byte(size & 0x7f)
			size >>= 7
		}
		b.WriteByte(c)
		b.Write(zlibOf(blob))
		h := sha1.New()
		fmt.Fprintf(h, "blob %d\x00", len(blob))
		h.Write(blob)
		ids = append(ids, hex.EncodeToString(h.Sum(nil)))
	}
	sum := sha1.Sum(b.Bytes())
	b.Write(sum[:])
	return b.Bytes(), ids
}

// coreDump renders an ELF core file: a header, noise standing for memory,
// and the process environment and a request buffer among it.
func (g *filler) coreDump(size int, strs ...string) []byte {
	b := g.elf(size)
	binary.LittleEndian.PutUint16(b[16:], 4) // ET_CORE
	pos := len(b) / 3
	var env []byte
	for _, s := range strs {
		env = append(env, s...)
		env = append(env, 0)
	}
	return append(b[:pos], append(env, b[pos:]...)...)
}

// notebook renders a Jupyter notebook with one code cell and its output.
func notebook(source []string, output []string) string {
	q := func(ls []string) string {
		var parts []string
		for i, l := range ls {
			if i < len(ls)-1 {
				l += "\n"
			}
			parts = append(parts, "    "+jsonString(l))
		}
		return strings.Join(parts, ",\n")
	}
	return "{\n \"cells\": [\n  {\n   \"cell_type\": \"code\",\n   \"execution_count\": 3,\n   \"metadata\": {},\n   \"outputs\": [\n    {\n     \"name\": \"stdout\",\n     \"output_type\": \"stream\",\n     \"text\": [\n" +
		q(output) + "\n     ]\n    }\n   ],\n   \"source\": [\n" + q(source) + "\n   ]\n  }\n ],\n \"metadata\": {\"kernelspec\": {\"name\": \"python3\"}},\n \"nbformat\": 4,\n \"nbformat_minor\": 5\n}\n"
}

func jsonString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// p12 renders the outline of a PKCS#12 file: version 3, a PKCS#7 data
// content, a shrouded key bag and a MAC, with random bytes for what a
// scanner does not parse.
func (f forge) p12() []byte {
	oidData := []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01}
	oidShrouded := []byte{0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02}
	body := []byte{0x02, 0x01, 0x03, 0x30, 0x82, 0x09, 0x00}
	body = append(body, oidData...)
	body = append(body, f.bytes(120)...)
	body = append(body, oidShrouded...)
	body = append(body, f.bytes(1300)...)
	return append([]byte{0x30, 0x82, byte(len(body) >> 8), byte(len(body))}, body...)
}
