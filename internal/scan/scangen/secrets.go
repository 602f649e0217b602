package scangen

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
)

// Alphabets of the credential formats.
const (
	alnum    = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	upper32  = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	hexLower = "0123456789abcdef"
	b64url   = alnum + "-_"
	b64std   = alnum + "+/"
	pwChars  = alnum + "!%*-_."
	bech32   = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"
	digits   = "0123456789"
)

// forge makes synthetic credentials in the real formats from a seeded RNG.
// Where a format allows it, a value carries COFFER or C0FFEE so that a
// reader sees it is a test value.
type forge struct{ r *rand.Rand }

func (f forge) pick(alphabet string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[f.r.IntN(len(alphabet))]
	}
	return string(b)
}

func (f forge) bytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(f.r.UintN(256))
	}
	return b
}

func (f forge) password() string { return "C0ffer" + f.pick(pwChars, 14) }

func (f forge) awsKeyID() string  { return "AKIACOFFER" + f.pick(upper32, 10) }
func (f forge) awsSecret() string { return "C0FFEE" + f.pick(b64std, 34) }
func (f forge) github() string    { return f.githubValid("ghp") }
func (f forge) gitlab() string    { return "glpat-C0FFEE" + f.pick(alnum, 14) }
func (f forge) slack() string {
	return "xoxb-" + f.pick(digits, 12) + "-" + f.pick(digits, 13) + "-C0FFEE" + f.pick(alnum, 18)
}
func (f forge) stripe() string        { return "sk_live_C0FFEE" + f.pick(alnum, 40) }
func (f forge) twilio() string        { return "SKc0ffee" + f.pick(hexLower, 26) }
func (f forge) sendgrid() string      { return "SG.C0FFEE" + f.pick(b64url, 16) + "." + f.pick(b64url, 43) }
func (f forge) npm() string           { return f.npmValid() }
func (f forge) pypi() string          { return "pypi-AgEIcHlwaS5vcmc" + f.pick(b64url, 70) }
func (f forge) dockerhub() string     { return "dckr_pat_C0FFEE" + f.pick(b64url, 21) }
func (f forge) gcpAPIKey() string     { return "AIzaC0FFEE" + f.pick(b64url, 29) }
func (f forge) vault() string         { return "hvs.C0FFEE" + f.pick(b64url, 94) }
func (f forge) age() string           { return "AGE-SECRET-KEY-1" + f.pick(bech32, 58) }
func (f forge) hex(n int) string      { return f.pick(hexLower, n) }
func (f forge) b64(nbytes int) string { return base64.StdEncoding.EncodeToString(f.bytes(nbytes)) }

func (f forge) azureStorage() string {
	return "DefaultEndpointsProtocol=https;AccountName=cofferdemo;AccountKey=" + f.b64(64) + ";EndpointSuffix=core.windows.net"
}

func (f forge) azureServiceBus() string {
	return "Endpoint=sb://coffer-demo.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=" + f.b64(32)
}

func (f forge) jwt() string {
	enc := base64.RawURLEncoding.EncodeToString
	hdr := enc([]byte(`{"alg":"HS256","typ":"JWT"}`))
	payload := enc(fmt.Appendf(nil, `{"sub":"svc-coffer-%s","iat":%d,"scope":"admin"}`, f.pick(alnum, 8), 1700000000+f.r.IntN(1e7)))
	return hdr + "." + payload + "." + f.pick(b64url, 43)
}

// pem wraps nbytes of random DER-looking data in a PEM block of the type.
func (f forge) pem(typ string, nbytes int, lead []byte) string {
	body := base64.StdEncoding.EncodeToString(append(lead, f.bytes(nbytes)...))
	var sb strings.Builder
	sb.WriteString("-----BEGIN " + typ + "-----\n")
	for len(body) > 64 {
		sb.WriteString(body[:64] + "\n")
		body = body[64:]
	}
	sb.WriteString(body + "\n-----END " + typ + "-----\n")
	return sb.String()
}

func (f forge) rsaKey() string { return f.pem("RSA PRIVATE KEY", 1190, []byte{0x30, 0x82, 0x04, 0xa4}) }
func (f forge) ecKey() string  { return f.pem("EC PRIVATE KEY", 117, []byte{0x30, 0x77}) }
func (f forge) pkcs8() string  { return f.pem("PRIVATE KEY", 1214, []byte{0x30, 0x82, 0x04, 0xbe}) }
func (f forge) sshKey() string {
	return f.pem("OPENSSH PRIVATE KEY", 400, []byte("openssh-key-v1\x00"))
}
func (f forge) pgpKey() string  { return f.pem("PGP PRIVATE KEY BLOCK", 900, []byte{0x95, 0x03, 0xc6}) }
func (f forge) certPEM() string { return f.pem("CERTIFICATE", 900, []byte{0x30, 0x82, 0x03, 0x80}) }
func (f forge) pubPEM() string  { return f.pem("PUBLIC KEY", 290, []byte{0x30, 0x82, 0x01, 0x22}) }

func (f forge) sshPub() string {
	return "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ" + f.pick(b64std, 340) + " deploy@coffer-test\n"
}

func (f forge) htpasswd() string {
	return "$apr1$" + f.pick(alnum, 8) + "$" + f.pick(alnum+"./", 22)
}

func (f forge) uuid() string {
	h := f.hex(32)
	return h[:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:]
}

// gcpServiceAccount returns a service account key file; the private key is
// on line 5.
func (f forge) gcpServiceAccount() string {
	key := f.pkcs8()
	m := []struct{ k, v string }{
		{"type", "service_account"},
		{"project_id", "coffer-test-" + f.pick(hexLower, 6)},
		{"private_key_id", f.hex(40)},
		{"private_key", key},
		{"client_email", "ci@coffer-test.iam.gserviceaccount.com"},
		{"client_id", f.pick(digits, 21)},
		{"token_uri", "https://oauth2.googleapis.com/token"},
	}
	var sb strings.Builder
	sb.WriteString("{\n")
	for i, kv := range m {
		v, _ := json.Marshal(kv.v)
		sb.WriteString(fmt.Sprintf("  %q: %s", kv.k, v))
		if i < len(m)-1 {
			sb.WriteString(",")
		}
		sb.WriteString("\n")
	}
	sb.WriteString("}\n")
	return sb.String()
}
