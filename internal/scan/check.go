package scan

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
)

// entropy is the Shannon entropy of b in bits per byte.
func entropy(b []byte) float64 {
	if len(b) == 0 {
		return 0
	}
	var counts [256]int
	for _, c := range b {
		counts[c]++
	}
	n := float64(len(b))
	var h float64
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}

// trivial reports values no one uses as a secret: one repeated byte, or a
// run of consecutive digits or letters ("12345678", "abcdefgh").
func trivial(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	same, up, down := true, true, true
	for i := 1; i < len(b); i++ {
		same = same && b[i] == b[0]
		up = up && b[i] == b[i-1]+1
		down = down && b[i] == b[i-1]-1
	}
	return same || up || down
}

// sequential reports a run of 6 or more consecutive characters counting
// up ("abcdef", "123456", "klmnop") anywhere in b: what people type as a
// placeholder ("AIzaSyabcdefghijklmnop", "dapi1234567890..."), and what a
// random token shows about once in 60 million characters.
func sequential(b []byte) bool {
	run := 1
	for i := 1; i < len(b); i++ {
		c, p := b[i], b[i-1]
		if c == p+1 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			if run++; run >= 6 {
				return true
			}
			continue
		}
		run = 1
	}
	return false
}

// validators are the built-in checks a rule can name in "validate".
var validators = map[string]func(*Rules, []byte) bool{
	"jwt":            validJWT,
	"pem-body":       validPEMBody,
	"docker-auth":    validDockerAuth,
	"basic-auth":     validBasicAuth,
	"assigned-value": validAssigned,
}

// decodePrintable decodes v as standard base64 when it is that and the
// result is printable text (a Kubernetes Secret's data, a config value
// written encoded); ok is false otherwise. The caller clears the result.
func decodePrintable(v []byte) ([]byte, bool) {
	if len(v) < 8 || len(v)%4 != 0 {
		return nil, false
	}
	b := make([]byte, base64.StdEncoding.DecodedLen(len(v)))
	n, err := base64.StdEncoding.Decode(b, v)
	if err != nil || n == 0 {
		clear(b)
		return nil, false
	}
	for _, c := range b[:n] {
		if c < 0x20 || c > 0x7e {
			clear(b)
			return nil, false
		}
	}
	return b[:n], true
}

// validAssigned accepts an assigned value unless it is the base64 of a
// placeholder ("changeme" written as Y2hhbmdlbWU=).
func validAssigned(rs *Rules, v []byte) bool {
	d, ok := decodePrintable(v)
	if !ok {
		return true
	}
	defer clear(d)
	return len(d) >= 4 && bytes.Count(d, []byte(" ")) < 2 && !rs.placeholder(d)
}

// validBasicAuth accepts HTTP Basic credentials: base64 of user:password
// with a real password.
func validBasicAuth(rs *Rules, v []byte) bool {
	d, ok := decodePrintable(bytes.TrimRight(v, "="))
	if !ok {
		if d, ok = decodePrintable(v); !ok {
			return false
		}
	}
	defer clear(d)
	user, pass, ok := bytes.Cut(d, []byte(":"))
	return ok && len(user) > 0 && len(pass) >= 3 && !rs.placeholder(pass)
}

// validJWT accepts a token whose header decodes to JSON with a signing
// algorithm other than "none", and whose payload is JSON.
func validJWT(_ *Rules, tok []byte) bool {
	parts := bytes.Split(tok, []byte("."))
	if len(parts) != 3 {
		return false
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if !decodeJSONPart(parts[0], &hdr) || hdr.Alg == "" || hdr.Alg == "none" {
		return false
	}
	var payload map[string]any
	if !decodeJSONPart(parts[1], &payload) {
		return false
	}
	// jwt.io's documentation token.
	if payload["name"] == "John Doe" && payload["sub"] == "1234567890" {
		return false
	}
	return true
}

func decodeJSONPart(p []byte, v any) bool {
	b := make([]byte, base64.RawURLEncoding.DecodedLen(len(p)))
	n, err := base64.RawURLEncoding.Decode(b, bytes.TrimRight(p, "="))
	if err != nil {
		return false
	}
	defer clear(b)
	return json.Unmarshal(b[:n], v) == nil
}

// validPEMBody accepts a PEM (or JSON-escaped PEM) body with at least 64
// base64 characters of real content: "...", "MIIE..." and the like fail.
func validPEMBody(_ *Rules, body []byte) bool {
	n, other := 0, 0
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/', c == '=':
			n++
		case c == '\\' && i+1 < len(body) && body[i+1] == 'n':
			i++
		case c == '\n', c == '\r', c == ' ', c == '\t', c == ':', c == ',', c == '-':
		default:
			other++
		}
	}
	return n >= 64 && other == 0 && entropy(body) >= 4.0
}

// validDockerAuth accepts a docker config "auth" that decodes to
// user:password with a non-placeholder password, or an identity token.
func validDockerAuth(rs *Rules, v []byte) bool {
	b := make([]byte, base64.StdEncoding.DecodedLen(len(v)))
	defer clear(b)
	n, err := base64.StdEncoding.Decode(b, v)
	if err != nil {
		// identitytoken values are opaque: judge by entropy.
		return len(v) >= 20 && entropy(v) >= 3.5
	}
	user, pass, ok := bytes.Cut(b[:n], []byte(":"))
	if !ok || len(user) == 0 || len(pass) < 3 {
		return false
	}
	for _, c := range pass {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return !rs.placeholder(pass)
}
