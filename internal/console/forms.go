package console

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"mime/multipart"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Limits on what a browser may post.
const (
	smallForm = 64 << 10 // every form but a secret's value
	maxField  = 4 << 10  // one field of a form (a value aside)
	maxParts  = 32       // fields in one form
)

// Form errors; each message names the field.
var (
	errTooLarge = errors.New("too large")
	errBadForm  = errors.New("invalid input")
)

// form is a posted form: each field once, as bytes the console owns and
// zeroes when the request is done, so that a secret value never becomes
// a Go string (which could not be cleared).
type form struct {
	f map[string][]byte
}

// get returns a field that is not a secret, as a string.
func (f *form) get(k string) string { return string(f.f[k]) }

// has reports whether the field was posted, even empty.
func (f *form) has(k string) bool { _, ok := f.f[k]; return ok }

// bytes returns a field as the form's own buffer (the caller must not
// keep it past the request).
func (f *form) bytes(k string) []byte { return f.f[k] }

// zero clears every field.
func (f *form) zero() {
	for _, v := range f.f {
		clear(v)
	}
}

// readForm reads r's body, at most limit bytes, as
// application/x-www-form-urlencoded or multipart/form-data. value names
// the fields that may be as long as the whole form (a secret's value or
// file); others are limited to maxField bytes. The body buffer is zeroed
// before readForm returns.
func readForm(r *http.Request, limit int64, value ...string) (*form, error) {
	ct, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return nil, fmt.Errorf("%w: Content-Type: a form is expected", errBadForm)
	}
	body, err := readBody(r, limit)
	defer clear(body)
	if err != nil {
		return nil, err
	}
	var f *form
	switch ct {
	case "application/x-www-form-urlencoded":
		f, err = parseURLEncoded(body)
	case "multipart/form-data":
		f, err = parseMultipart(body, params["boundary"])
	default:
		return nil, fmt.Errorf("%w: Content-Type %s: a form is expected", errBadForm, ct)
	}
	if err != nil {
		return nil, err
	}
	for k, v := range f.f {
		if len(v) > maxField && !slices.Contains(value, k) {
			f.zero()
			return nil, fmt.Errorf("%w: field %q is longer than %d bytes", errTooLarge, k, maxField)
		}
	}
	return f, nil
}

// readBody reads at most limit bytes of r's body into a buffer the caller
// zeroes.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fmt.Errorf("%w: the limit is %d bytes", errTooLarge, limit)
	}
	buf, err := readAll(r.Body, limit, r.ContentLength)
	switch {
	case errors.Is(err, errTooLarge):
		return buf, fmt.Errorf("%w: the limit is %d bytes", errTooLarge, limit)
	case err != nil:
		return buf, fmt.Errorf("%w: reading the form: %v", errBadForm, err)
	}
	return buf, nil
}

// readAll reads rd to its end into a buffer of at most limit bytes (hint:
// the expected size, or <= 0), clearing every buffer it outgrows; more
// than limit bytes is errTooLarge.
func readAll(rd io.Reader, limit, hint int64) ([]byte, error) {
	buf := make([]byte, 0, min(max(hint, 512), limit)+1)
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return buf, errTooLarge
			}
			next := make([]byte, len(buf), min(int64(2*cap(buf)), limit+1))
			copy(next, buf)
			clear(buf)
			buf = next
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return buf, errTooLarge
		}
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// parseURLEncoded parses a urlencoded body into fields it allocates;
// each name at most once.
func parseURLEncoded(body []byte) (*form, error) {
	f := &form{f: map[string][]byte{}}
	for pair := range bytes.SplitSeq(body, []byte("&")) {
		if len(pair) == 0 {
			continue
		}
		k, v, _ := bytes.Cut(pair, []byte("="))
		name, err := unescape(k)
		if err != nil {
			f.zero()
			return nil, fmt.Errorf("%w: a field name is not valid URL encoding", errBadForm)
		}
		if err := f.add(string(name), v, true); err != nil {
			f.zero()
			return nil, err
		}
	}
	if len(f.f) > maxParts {
		f.zero()
		return nil, fmt.Errorf("%w: more than %d fields", errBadForm, maxParts)
	}
	return f, nil
}

func (f *form) add(name string, v []byte, escaped bool) error {
	if _, dup := f.f[name]; dup {
		return fmt.Errorf("%w: field %q given twice", errBadForm, name)
	}
	if len(f.f) >= maxParts {
		return fmt.Errorf("%w: more than %d fields", errBadForm, maxParts)
	}
	if !escaped {
		f.f[name] = bytes.Clone(v)
		return nil
	}
	val, err := unescape(v)
	if err != nil {
		return fmt.Errorf("%w: field %q is not valid URL encoding", errBadForm, name)
	}
	f.f[name] = val
	return nil
}

// unescape decodes form URL encoding ('+' is a space) into a new buffer.
func unescape(s []byte) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '+':
			out = append(out, ' ')
		case '%':
			if i+2 >= len(s) {
				clear(out)
				return nil, errBadForm
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				clear(out)
				return nil, errBadForm
			}
			out = append(out, hi<<4|lo)
			i += 2
		default:
			out = append(out, c)
		}
	}
	return out, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// parseMultipart parses a multipart/form-data body; a file part is stored
// under its field name, like any other.
func parseMultipart(body []byte, boundary string) (*form, error) {
	if boundary == "" {
		return nil, fmt.Errorf("%w: multipart form without a boundary", errBadForm)
	}
	f := &form{f: map[string][]byte{}}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			return f, nil
		}
		if err != nil {
			f.zero()
			return nil, fmt.Errorf("%w: malformed multipart form", errBadForm)
		}
		name := p.FormName()
		if name == "" {
			f.zero()
			return nil, fmt.Errorf("%w: a multipart part without a field name", errBadForm)
		}
		v, err := readPart(p, len(body))
		if err != nil {
			clear(v)
			f.zero()
			return nil, fmt.Errorf("%w: field %q: malformed multipart form", errBadForm, name)
		}
		err = f.add(name, v, false)
		clear(v)
		if err != nil {
			f.zero()
			return nil, err
		}
	}
}

// readPart reads a part of a body of n bytes.
func readPart(p *multipart.Part, n int) ([]byte, error) {
	return readAll(p, int64(n), 0)
}

// parseLabels reads "k=v,k2=v2" (spaces around items allowed) into a map.
// Checking keys and values is the API's business; this refuses only what
// cannot be a label list: an item without '=', an empty key, a key twice.
func parseLabels(field, s string) (map[string]string, error) {
	out := map[string]string{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case !ok:
			return nil, fmt.Errorf("%w: %s: %q is not key=value", errBadForm, field, item)
		case k == "":
			return nil, fmt.Errorf("%w: %s: an empty key in %q", errBadForm, field, item)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("%w: %s: key %q given twice", errBadForm, field, k)
		}
		out[k] = v
	}
	return out, nil
}

// formatLabels writes labels as parseLabels reads them, sorted.
func formatLabels(m map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(k + "=" + m[k])
	}
	return b.String()
}

// parseMode reads a file mode: octal, with or without a leading 0 or 0o;
// "" is the default (0).
func parseMode(s string) (uint32, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	t := strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O")
	m, err := strconv.ParseUint(t, 8, 32)
	if err != nil || m > 0o7777 {
		return 0, fmt.Errorf("%w: mode %q: an octal file mode such as 0440", errBadForm, s)
	}
	return uint32(m), nil
}

// parseID reads a uid or gid field: "" is 0.
func parseID(field, s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%w: %s %q: a number", errBadForm, field, s)
	}
	return n, nil
}
