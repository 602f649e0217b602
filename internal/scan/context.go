package scan

import (
	"bytes"
	"fmt"
	"strings"
)

// Confidence says how likely a finding is a live secret, judged from the
// context a reviewer would look at: where the file is (tests, docs,
// templates, vendored code), which host a URL points at, whether the value
// is a well-known default or is printed in the package's documentation.
type Confidence int

// Confidences, lowest first.
const (
	ConfidenceLow Confidence = iota + 1
	ConfidenceMedium
	ConfidenceHigh
)

var confidenceNames = map[Confidence]string{ConfidenceLow: "low", ConfidenceMedium: "medium", ConfidenceHigh: "high"}

// String returns the lower-case name, e.g. "high".
func (c Confidence) String() string {
	if n, ok := confidenceNames[c]; ok {
		return n
	}
	return fmt.Sprintf("confidence(%d)", int(c))
}

// MarshalText implements encoding.TextMarshaler.
func (c Confidence) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (c *Confidence) UnmarshalText(b []byte) error {
	for k, v := range confidenceNames {
		if strings.EqualFold(string(b), v) {
			*c = k
			return nil
		}
	}
	return fmt.Errorf("unknown confidence %q (want low, medium or high)", b)
}

// A reason lowers a finding's confidence by its weight: in all, 0 is high,
// 1 medium, 2 or more low. Findings of a high-signal rule (private keys,
// cloud key pairs, tokens whose checksum holds) never go below medium.
type reason struct {
	text   string
	weight int
}

var (
	reasonTest       = reason{"test or fixture path", 2}
	reasonDocs       = reason{"documentation", 2}
	reasonTemplate   = reason{"example or template file", 2}
	reasonVendored   = reason{"vendored dependency", 1}
	reasonLoopback   = reason{"loopback host", 1}
	reasonExample    = reason{"example host", 2}
	reasonDefault    = reason{"well-known default credential", 2}
	reasonDocumented = reason{"value appears in the package's documentation", 2}
	reasonChecksum   = reason{"token checksum does not match", 1}
	reasonLibrary    = reason{"inside a shared library", 1}
	reasonTestName   = reason{"named as a test value", 2}
)

func confidenceOf(reasons []reason, highSignal bool) Confidence {
	w := 0
	for _, r := range reasons {
		w += r.weight
	}
	switch {
	case w == 0:
		return ConfidenceHigh
	case w == 1 || highSignal:
		return ConfidenceMedium
	}
	return ConfidenceLow
}

// hostReasons looks for loopback and documentation hosts in a match (the
// host of a URL, the server of a connection string).
func hostReasons(m []byte) []reason {
	low := bytes.ToLower(m)
	var rs []reason
	loop, example := false, false
	for _, h := range []string{"localhost", "127.0.0.1", "0.0.0.0", "[::1]", "host.docker.internal"} {
		if hostAt(low, h) {
			loop = true
		}
	}
	for _, h := range []string{"example.com", "example.org", "example.net", ".example", ".test", ".invalid", ".localhost",
		"2001:db8:", "192.0.2.", "198.51.100.", "203.0.113."} {
		if hostAt(low, h) {
			example = true
		}
	}
	if loop {
		rs = append(rs, reasonLoopback)
	}
	if example {
		rs = append(rs, reasonExample)
	}
	return rs
}

// hostAt reports whether h occurs in s as (the end of) a host name: not
// followed by a host character.
func hostAt(s []byte, h string) bool {
	for off := 0; ; {
		i := bytes.Index(s[off:], []byte(h))
		if i < 0 {
			return false
		}
		end := off + i + len(h)
		start := off + i
		okEnd := end == len(s) || !hostByte(s[end]) || h[len(h)-1] == '.' || h[len(h)-1] == ':'
		okStart := h[0] == '.' || h[0] == '[' || start == 0 || !hostByte(s[start-1]) || s[start-1] == '.'
		if okEnd && okStart {
			return true
		}
		off = end
	}
}

func hostByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_'
}

// Well-known default passwords: the values that images, tutorials and
// Helm charts ship with, and the ones everyone tries first.
var defaultPasswords = set("postgres", "postgrespw", "root", "toor", "admin", "admin123", "administrator",
	"password", "password1", "password123", "passw0rd", "p@ssw0rd", "p@ssword", "pass", "pass123", "pa55word",
	"secret", "secret123", "s3cr3t", "supersecret", "guest", "test", "test123", "testing", "changeit",
	"changeme", "letmein", "123456", "12345678", "123456789", "qwerty", "default", "demo", "user", "mysql",
	"oracle", "sa", "minioadmin", "rabbitmq", "elastic", "kibana", "grafana", "prom-operator", "my-secret-pw",
	"mysecretpassword", "example", "hunter2", "foobared", "tiger", "manager", "sonar", "jenkins", "airflow",
	"keycloak", "superuser", "welcome", "welcome1", "mypass", "mypassword", "yourpassword", "secretpassword", "redis", "mongo", "mongodb", "docker", "vagrant",
	"ubuntu", "raspberry", "nexus", "bitnami", "openshift", "dev", "development", "local")

// defaultCredential reports a well-known default: a password from the
// list, or a password equal to its user name (postgres/postgres).
func defaultCredential(user, pass []byte) bool {
	p := strings.ToLower(string(pass))
	if defaultPasswords[p] {
		return true
	}
	return len(user) > 0 && strings.EqualFold(string(user), string(pass))
}

// credentialUser returns the user name that goes with a password match,
// when the rule's format has one: scheme://user:pass@, User Id=...;
// host:port:db:user:pass, login USER password, a decoded docker auth.
func credentialUser(ruleID string, data []byte, m match) []byte {
	switch ruleID {
	case "url-credentials":
		seg := data[m.mstart:m.start]
		if i := bytes.LastIndex(seg, []byte("://")); i >= 0 {
			seg = seg[i+3:]
		}
		return bytes.TrimSuffix(seg, []byte(":"))
	case "pgpass":
		line := data[m.mstart:m.start]
		parts := bytes.Split(bytes.TrimSuffix(line, []byte(":")), []byte(":"))
		if len(parts) >= 4 {
			return parts[3]
		}
	case "db-connection-string":
		seg := data[lineStart(data, m.mstart):m.mend]
		for _, k := range []string{"user id=", "uid=", "user=", "username="} {
			if i := bytes.Index(bytes.ToLower(seg), []byte(k)); i >= 0 {
				v := seg[i+len(k):]
				if j := bytes.IndexAny(v, "; "); j >= 0 {
					v = v[:j]
				}
				return v
			}
		}
	case "netrc-password":
		seg := data[max(0, m.mstart-256):m.mstart]
		if i := bytes.LastIndex(seg, []byte("login")); i >= 0 {
			f := bytes.Fields(seg[i+len("login"):])
			if len(f) > 0 {
				return f[0]
			}
		}
	}
	return nil
}

// packageOf names the package a path belongs to, so that a value found in
// a config file can be looked up in the same package's documentation:
// node_modules/NAME, site-packages/NAME, vendor/..., a Debian package
// (usr/share/doc/NAME, etc/NAME, usr/lib/NAME, opt/NAME), else the top
// directory.
func packageOf(p string) string {
	top, _, _ := strings.Cut(p, "!/")
	els := strings.Split(top, "/")
	for i, el := range els[:len(els)-1] {
		if strings.Contains(el, "@v") { // Go module cache: module@version
			return strings.Join(els[:i+1], "/")
		}
		switch el {
		case "node_modules":
			if i+2 < len(els) && strings.HasPrefix(els[i+1], "@") {
				return strings.Join(els[:i+3], "/")
			}
			return strings.Join(els[:i+2], "/")
		case "site-packages", "dist-packages", "gems":
			return strings.Join(els[:i+2], "/")
		case "vendor":
			if i+3 < len(els) && strings.Contains(els[i+1], ".") { // vendor/github.com/org/repo
				return strings.Join(els[:i+4], "/")
			}
			return strings.Join(els[:i+2], "/")
		}
	}
	debian := func(name string) string {
		n := 0
		for n < len(name) && (name[n] >= 'a' && name[n] <= 'z' || name[n] >= 'A' && name[n] <= 'Z') {
			n++
		}
		return "pkg:" + strings.ToLower(name[:n])
	}
	switch {
	case len(els) >= 5 && els[0] == "usr" && els[1] == "share" && (els[2] == "doc" || els[2] == "man"):
		return debian(els[3])
	case len(els) >= 4 && els[0] == "usr" && (els[1] == "share" || els[1] == "lib"):
		return debian(els[2])
	case len(els) >= 3 && (els[0] == "etc" || els[0] == "opt"):
		return debian(els[1])
	case len(els) >= 3 && (els[0] == "srv" || els[0] == "home"):
		return els[0] + "/" + els[1]
	}
	return els[0]
}

// docSep marks the bytes that end a word of documentation: blanks and
// control bytes, quotes, brackets and operators.
var docSep = func() (t [256]bool) {
	for c := 0; c <= ' '; c++ {
		t[c] = true
	}
	for c := 0x7f; c < 256; c++ {
		t[c] = true
	}
	for _, c := range []byte("\"'`()[]{}<>=,;&?") {
		t[c] = true
	}
	return t
}()

// docTokens calls fn with every word of a documentation file that could be
// a credential: 6 to 256 bytes between blanks, quotes, brackets and
// operators (": " too, but not the colon of a URL), with a digit or a
// symbol in it.
func docTokens(data []byte, fn func([]byte)) {
	start := -1
	for i := 0; i <= len(data); i++ {
		sep := i == len(data) || docSep[data[i]] ||
			data[i] == ':' && i+1 < len(data) && (data[i+1] == ' ' || data[i+1] == '\n' || data[i+1] == '\t')
		if !sep {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			tok := data[start:i]
			for len(tok) > 0 && (tok[len(tok)-1] == '.' || tok[len(tok)-1] == ':') {
				tok = tok[:len(tok)-1]
			}
			if len(tok) >= 6 && len(tok) <= 256 && !plainWord(tok) {
				fn(tok)
			}
			start = -1
		}
	}
}

// plainWord reports a word made only of letters (and hyphens): prose, not
// a value worth remembering.
func plainWord(b []byte) bool {
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
			return false
		}
	}
	return true
}

// encodedDefault reports a default credential written as base64 user:pass
// (HTTP Basic, docker config auth).
func encodedDefault(r *compiledRule, v []byte) bool {
	if r.Validate != "basic-auth" && r.Validate != "docker-auth" {
		return false
	}
	d, ok := decodePrintable(v)
	if !ok {
		return false
	}
	defer clear(d)
	user, pass, ok := bytes.Cut(d, []byte(":"))
	return ok && defaultCredential(user, pass)
}

// testKeyName reports a key named as a test or example value:
// TEST_API_KEY, fakeToken, dummy_password, exampleSecret.
func testKeyName(data []byte, ks int) bool {
	ke := ks
	for ke < len(data) && ke-ks < 128 && wordByte(data[ke]) {
		ke++
	}
	for _, w := range words(string(data[ks:ke])) {
		switch w {
		case "test", "testing", "fake", "dummy", "mock", "example", "sample", "demo", "stub", "fixture":
			return true
		}
	}
	return false
}
