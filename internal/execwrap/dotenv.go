package execwrap

import (
	"bytes"
	"fmt"
)

// Entry is one variable of a dotenv file; Value aliases the file's buffer.
type Entry struct {
	Name  string
	Value []byte
	Line  int
}

// ParseDotenv parses a file of environment variables, one per line:
//
//	# a comment
//	NAME=value
//	export OTHER="a value"   ('export ' is allowed)
//	EMPTY=
//
// Blank lines and lines starting with '#' are skipped. The value is the
// rest of the line after '=', without a trailing '\r'; a value wrapped in
// matching double or single quotes loses the quotes, and nothing inside is
// interpreted (no escapes, no expansion). A name must be ValidName, and
// may appear once. Values alias data. Errors name the line, never its
// content.
func ParseDotenv(data []byte) ([]Entry, error) {
	var out []Entry
	seen := map[string]int{}
	for n := 1; len(data) > 0; n++ {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		trimmed := bytes.TrimLeft(line, " \t")
		if len(trimmed) == 0 || trimmed[0] == '#' {
			continue
		}
		if rest, ok := bytes.CutPrefix(trimmed, []byte("export ")); ok {
			trimmed = bytes.TrimLeft(rest, " \t")
		}
		i := bytes.IndexByte(trimmed, '=')
		if i < 0 {
			return nil, fmt.Errorf("line %d: not NAME=VALUE", n)
		}
		name := string(bytes.TrimRight(trimmed[:i], " \t"))
		if !ValidName(name) {
			return nil, fmt.Errorf("line %d: not a valid variable name (a letter or _, then letters, digits, _)", n)
		}
		if prev, dup := seen[name]; dup {
			return nil, fmt.Errorf("line %d: %s set again (first on line %d)", n, name, prev)
		}
		seen[name] = n
		v := trimmed[i+1:]
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		out = append(out, Entry{Name: name, Value: v, Line: n})
	}
	return out, nil
}
