package keystore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"coffer/internal/secret"
)

// Pick returns the value of key in item, a JSON object: a string value as its
// bytes (unescaped), any other value (number, true/false, object, array) as
// compact JSON text. A missing key, a null value, or an item that is not a
// JSON object fail with ErrNoKey; the error never quotes the item. The
// result is a new buffer the caller zeroes; item is not changed.
func Pick(item []byte, key string) (secret.Value, error) {
	var obj map[string]json.RawMessage
	// The decoder's error text can quote bytes of the item: never use it.
	if err := json.Unmarshal(item, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("%w: #%s: the item is not a JSON object, so no key can be picked from it", ErrNoKey, key)
	}
	defer func() {
		for _, raw := range obj {
			clear(raw)
		}
	}()
	raw, ok := obj[key]
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: #%s: the item has no key %s (it has %d keys)", ErrNoKey, key, strconv.Quote(key), len(obj))
	case string(raw) == "null":
		return nil, fmt.Errorf("%w: #%s: the key's value is null", ErrNoKey, key)
	case raw[0] == '"':
		return secret.Value(appendUnquote(make([]byte, 0, len(raw)-2), raw)), nil
	default:
		var b bytes.Buffer
		b.Grow(len(raw))
		if err := json.Compact(&b, raw); err != nil { // cannot happen: Unmarshal validated it
			return nil, fmt.Errorf("%w: #%s: malformed value", ErrNoKey, key)
		}
		return secret.Value(b.Bytes()), nil
	}
}

// appendUnquote appends the JSON string literal q (with its quotes, already
// validated) to dst, unescaped the way encoding/json does: invalid UTF-8 and
// lone surrogates become U+FFFD. Unlike json.Unmarshal into a string it
// never makes an immutable copy, so the result can be zeroed.
func appendUnquote(dst, q []byte) []byte {
	s := q[1 : len(q)-1]
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			switch s[i] {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r, n := unicodeEscape(s[i-1:])
				dst = utf8.AppendRune(dst, r)
				i += n - 2
			default: // '"', '\\', '/'
				dst = append(dst, s[i])
			}
			i++
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, n := utf8.DecodeRune(s[i:])
			dst = utf8.AppendRune(dst, r) // RuneError for invalid bytes, as encoding/json
			i += n
		}
	}
	return dst
}

// unicodeEscape decodes \uXXXX (and a following \uXXXX if the first is a high
// surrogate) at the start of s, returning the rune and the bytes consumed.
func unicodeEscape(s []byte) (rune, int) {
	r1, ok := hex4(s)
	if !ok {
		return utf8.RuneError, 2
	}
	if !utf16.IsSurrogate(r1) {
		return r1, 6
	}
	if r2, ok := hex4(s[6:]); ok {
		if r := utf16.DecodeRune(r1, r2); r != utf8.RuneError {
			return r, 12
		}
	}
	return utf8.RuneError, 6
}

// hex4 reads \uXXXX at the start of s.
func hex4(s []byte) (rune, bool) {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return 0, false
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r*16 + rune(c)
	}
	return r, true
}

// Fetch reads ref.Item from ks and returns its version and value: the whole
// item, or with ref.Key the value of that key (see Pick). Errors are *Error
// values naming ref.Upstream and ref.Item.
func Fetch(ctx context.Context, ks Keystore, ref Ref) (Item, error) {
	it, err := ks.Read(ctx, ref.Item)
	if err != nil || ref.Key == "" {
		return it, err
	}
	v, err := Pick(it.Value, ref.Key)
	it.Value.Zero()
	if err != nil {
		return Item{}, &Error{Upstream: ref.Upstream, Item: ref.Item, Err: err}
	}
	return Item{Version: it.Version, Value: v}, nil
}

// AppendQuote appends b as a JSON string literal to dst, escaping only what
// JSON requires ('"', '\\' and control characters; no HTML escaping), and
// writing invalid UTF-8 as U+FFFD. It makes no immutable copies of b.
func AppendQuote(dst, b []byte) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		dst = utf8.AppendRune(dst, r)
		i += n
	}
	return append(dst, '"')
}

// CanonicalObject encodes a decoded JSON object in the canonical form of a
// JSON-shaped item: keys sorted, compact, strings re-encoded with
// AppendQuote, other values compacted. It is how items that an upstream
// holds as a map (Vault KV) become one value.
func CanonicalObject(obj map[string]json.RawMessage) ([]byte, error) {
	keys := make([]string, 0, len(obj))
	size := 2
	for k, v := range obj {
		keys = append(keys, k)
		size += len(k) + len(v) + 4
	}
	slices.Sort(keys)
	out := make([]byte, 0, size)
	out = append(out, '{')
	var tmp bytes.Buffer
	for i, k := range keys {
		if i > 0 {
			out = append(out, ',')
		}
		out = AppendQuote(out, []byte(k))
		out = append(out, ':')
		raw := obj[k]
		if len(raw) > 0 && raw[0] == '"' {
			s := appendUnquote(make([]byte, 0, len(raw)), raw)
			out = AppendQuote(out, s)
			clear(s)
			continue
		}
		tmp.Reset()
		if err := json.Compact(&tmp, raw); err != nil {
			clear(out)
			return nil, fmt.Errorf("malformed JSON value for key %s", strconv.Quote(k))
		}
		out = append(out, tmp.Bytes()...)
		clear(tmp.Bytes())
	}
	return append(out, '}'), nil
}
