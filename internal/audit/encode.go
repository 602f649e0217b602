package audit

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The canonical encoding of a record's body is, by definition, what
// json.Marshal makes of body (see canonical). appendCanonical writes the
// same bytes by hand, without reflection, for the committer: every byte
// must stay as json.Marshal has always written it, or new records would
// read differently from old ones. FuzzCanonical and TestCanonicalMatchesJSON
// compare the two.

// appendCanonical appends the canonical encoding of e without Hash and MAC
// (what json.Marshal makes of body) to dst. scratch is space for the
// Details, reused between calls; it may be nil.
func appendCanonical(dst []byte, e *Event, scratch *[]detail) ([]byte, error) {
	if e.Time.Location() != time.UTC || e.Time.Year() < 0 || e.Time.Year() > 9999 {
		// Not a time prepare makes: leave it, and its errors, to encoding/json.
		return appendCanonicalJSON(dst, e)
	}
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, e.Seq, 10)
	dst = append(dst, `,"time":"`...)
	// What Time.MarshalJSON writes for a UTC time of years 0 to 9999.
	dst = e.Time.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","actor":`...)
	dst = appendJSONString(dst, e.Actor)
	dst = append(dst, `,"action":`...)
	dst = appendJSONString(dst, e.Action)
	if e.Object != "" {
		dst = append(dst, `,"object":`...)
		dst = appendJSONString(dst, e.Object)
	}
	dst = append(dst, `,"result":`...)
	dst = appendJSONString(dst, e.Result)
	if e.Source != "" {
		dst = append(dst, `,"source":`...)
		dst = appendJSONString(dst, e.Source)
	}
	if len(e.Details) > 0 {
		var ds []detail
		if scratch != nil {
			ds = (*scratch)[:0]
		}
		for k, v := range e.Details {
			ds = append(ds, detail{k, v})
		}
		sortDetails(ds)
		dst = append(dst, `,"details":{`...)
		for i, d := range ds {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, d.k)
			dst = append(dst, ':')
			dst = appendJSONString(dst, d.v)
		}
		dst = append(dst, '}')
		if scratch != nil {
			clear(ds) // let the strings go with their records
			*scratch = ds[:0]
		}
	}
	if e.Server != "" {
		dst = append(dst, `,"server":`...)
		dst = appendJSONString(dst, e.Server)
	}
	dst = append(dst, `,"prev":`...)
	dst = appendJSONString(dst, e.Prev)
	return append(dst, '}'), nil
}

// appendCanonicalJSON is appendCanonical by encoding/json: the definition.
func appendCanonicalJSON(dst []byte, e *Event) ([]byte, error) {
	b, err := json.Marshal(body{
		Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action, Object: e.Object,
		Result: e.Result, Source: e.Source, Details: e.Details, Server: e.Server, Prev: e.Prev,
	})
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

// detail is one entry of Event.Details.
type detail struct{ k, v string }

// sortDetails sorts ds by key, as encoding/json sorts map keys: by their
// bytes, as strings compare. The keys of a map are distinct.
func sortDetails(ds []detail) {
	if len(ds) > 12 {
		slices.SortFunc(ds, func(a, b detail) int { return strings.Compare(a.k, b.k) })
		return
	}
	for i := 1; i < len(ds); i++ { // insertion sort: a few keys
		for j := i; j > 0 && ds[j].k < ds[j-1].k; j-- {
			ds[j], ds[j-1] = ds[j-1], ds[j]
		}
	}
}

const lowerHex = "0123456789abcdef"

// jsonSafe[b] says whether encoding/json writes the ASCII byte b as it is
// in a string with HTML escaping on (json.Marshal's default): everything
// but the control characters, '"', '\\', '<', '>' and '&'.
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = true
	}
	for _, b := range `"\<>&` {
		t[b] = false
	}
	return t
}()

// appendJSONString appends s as json.Marshal writes a string: quoted,
// with '"' and '\\' escaped, \b \f \n \r \t as such, the other control
// characters and '<', '>', '&' as \u00XX, U+2028 and U+2029 as \u2028
// and \u2029, and each byte of invalid UTF-8 as \ufffd.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if jsonSafe[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', lowerHex[b>>4], lowerHex[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case c == '\u2028' || c == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', lowerHex[c&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
