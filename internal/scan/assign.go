package scan

import "bytes"

// assignment is a key = value pair found around a keyword: data[ks:ke] is
// the key (the word holding the keyword), data[vs:ve] the value and
// data[ks:end] the whole assignment, closing quote included.
type assignment struct {
	ks, ke, vs, ve, end int
	quoted              bool // the value is a quoted string
}

// parseAssign parses the assignment whose key holds the keyword at
// data[s:e], in the forms configuration files and code write them:
//
//	DB_PASSWORD=value            password: "value"     "api_key": "value"
//	spring.datasource.password=v os.environ["TOKEN"] = 'v'   secret := `v`
//	\"password\": \"value\"      (JSON inside a JSON string: notebooks, logs)
//
// The keyword must end the word or a part of it (db_password,
// password_file, not passwords); the rule's denySuffixes and denyPrefixes
// reject words such as password_file or public_key; a comparison (==) is
// not an assignment. In a binary, the value stops at the first
// non-printable byte.
func parseAssign(r *compiledRule, data []byte, s, e int, binary bool) (assignment, bool) {
	var a assignment
	n := len(data)
	if e < n && wordByte(data[e]) {
		if r.WordEnd || (data[e] != '_' && data[e] != '.' && data[e] != '-') {
			return a, false
		}
	}
	a.ks = wordStart(data, s)
	hi := min(n, e+maxFwd)
	we := e
	for we < hi && wordByte(data[we]) {
		we++
	}
	a.ke = we
	if we > e && deniedSuffix(r.denySuf, data[e:we]) {
		return a, false
	}
	pe := s // the denied prefixes end where the keywords' common core starts: "Public|Key" for "ckey"
	if r.coreLen > 0 {
		pe = e - r.coreLen
	}
	if pe > a.ks && len(r.denyPre.lens) > 0 && deniedSuffix(r.denyPre, bytes.TrimRight(data[a.ks:pe], "_.-")) {
		return a, false
	}
	if data[we-1] == 'S' && (string(data[a.ks:we]) == "PASS" || string(data[a.ks:we]) == "XPASS") && we < hi && data[we] == ':' {
		return a, false // a test runner's result line (Automake, DejaGnu, TAP)
	}
	i := we
	// Closing quotes and brackets of the key: "key", ['key'], \"key\".
	for k := 0; k < 4 && i < hi && (data[i] == '"' || data[i] == '\'' || data[i] == '\\' || data[i] == ']'); k++ {
		i++
	}
	keyQuoted := i > we && (data[i-1] == '"' || data[i-1] == '\'')
	i = skipBlanks(data, i, hi)
	// Go's "var token string = ...": a type between the name and '='.
	if t := skipType(data, i, hi); t > i && t < hi && data[t] == '=' {
		i = t
	}
	if i >= hi {
		return a, false
	}
	switch c := data[i]; {
	case c == '=':
		if i+1 < hi && (data[i+1] == '=' || data[i+1] == '~') {
			return a, false // a comparison or a match
		}
		i++
		if i < hi && data[i] == '>' {
			i++
		}
	case c == ':':
		n := 1
		for i+n < hi && data[i+n] == ':' {
			n++
		}
		switch {
		case i+n < hi && data[i+n] == '=': // := ::= :::=
			i += n + 1
		case n > 1:
			return a, false // C++/Rust path
		default:
			i++
			// TypeScript, Kotlin: "token: string = ..."
			if t := skipType(data, skipBlanks(data, i, hi), hi); t < hi && data[t] == '=' && (t+1 >= hi || data[t+1] != '=') {
				i = t + 1
			}
		}
	case (c == '?' || c == '.' || c == '|') && i+1 < hi && data[i+1] == '=': // ?= (make), .= (PHP)
		i += 2
	case (c == '?' || c == '|') && i+2 < hi && data[i+1] == c && data[i+2] == '=': // ??= ||=
		i += 3
	case c == ',' && keyQuoted && constantName(data[a.ks:we]): // setProperty("API_TOKEN", "..."), os.Setenv("TOKEN", "...")
		j := skipBlanks(data, i+1, hi)
		if j >= hi || (data[j] != '"' && data[j] != '\'') {
			return a, false
		}
		i = j
	default:
		return a, false
	}
	i = skipBlanks(data, i, hi)
	if i >= hi {
		return a, false
	}
	var q byte
	escaped := false
	switch c := data[i]; {
	case c == '"' || c == '\'' || c == '`':
		q = c
		i++
	case c == '\\' && i+1 < hi && (data[i+1] == '"' || data[i+1] == '\''):
		q, escaped = data[i+1], true
		i += 2
	}
	a.vs = i
	a.quoted = q != 0
	if q == 0 {
		for i < hi && valueByte(data[i], binary) {
			i++
		}
		a.ve, a.end = i, i
	} else {
		for i < hi && data[i] != q && data[i] != '\n' && (!binary || printableByte(data[i], false)) {
			if data[i] == '\\' && !escaped && i+1 < hi && data[i+1] != '\n' {
				i++ // an escaped character inside the quotes
			}
			i++
		}
		if i >= hi || data[i] != q {
			return a, false // not closed on this line
		}
		a.ve = i
		if escaped {
			if data[i-1] != '\\' {
				return a, false
			}
			a.ve = i - 1
		}
		a.end = i + 1
	}
	if a.ve-a.vs < r.MinLen || a.ve-a.vs > r.MaxLen {
		return a, false
	}
	if a.quoted && bytes.Count(data[a.vs:a.ve], []byte(" ")) >= 2 {
		return a, false // prose: a message, a description
	}
	if !a.quoted && envAssignment(data[a.vs:a.ve]) {
		return a, false // shell: "VAR= OTHER=x cmd" leaves VAR empty
	}
	return a, true
}

func skipBlanks(data []byte, i, hi int) int {
	for i < hi && (data[i] == ' ' || data[i] == '\t') {
		i++
	}
	return i
}

// valueByte reports whether c can be part of an unquoted value: not a
// blank, quote, comment, separator or backslash (JSON escapes), and
// printable in a binary.
func valueByte(c byte, binary bool) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '"', '\'', '`', '#', ';', ',', '\\':
		return false
	}
	if c < 0x20 || c == 0x7f {
		return false
	}
	return !binary || c < 0x7f
}

// envAssignment reports a value that is itself NAME=...: the next
// variable of a shell command line.
func envAssignment(v []byte) bool {
	i := 0
	for i < len(v) && (v[i] >= 'A' && v[i] <= 'Z' || v[i] == '_' || i > 0 && v[i] >= '0' && v[i] <= '9') {
		i++
	}
	return i > 0 && i < len(v) && v[i] == '='
}

// skipType skips a type name and the blanks after it (string, String,
// str, &str, []byte, String?) and returns where it ends, or i if there is
// none.
func skipType(data []byte, i, hi int) int {
	j := i
	for j < hi && (data[j] == '&' || data[j] == '[' || data[j] == ']' || data[j] == '*') {
		j++
	}
	s := j
	for j < hi && (data[j] >= 'a' && data[j] <= 'z' || data[j] >= 'A' && data[j] <= 'Z' || data[j] >= '0' && data[j] <= '9' || data[j] == '.') {
		j++
	}
	if j == s || j-s > 16 {
		return i
	}
	switch string(bytes.ToLower(data[s:j])) {
	case "string", "str", "byte", "any", "object", "charsequence", "text", "secret", "securestring":
	default:
		return i
	}
	if j < hi && data[j] == '?' {
		j++
	}
	return skipBlanks(data, j, hi)
}

// constantName reports an environment-variable style name: upper case,
// digits and underscores (DB_PASSWORD), as the pair form of
// System.setProperty and os.Setenv takes; resource-bundle keys
// ("keystore.password") are not.
func constantName(b []byte) bool {
	for _, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return len(b) > 0
}
