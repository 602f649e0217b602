package api

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"coffer/internal/policy"
)

// FuzzDecode: any body either decodes or gives errBadRequest / errTooLarge;
// it never panics, and error messages never echo the body.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"value":"eA=="}`, `{"generate":{"length":3}}`, `{"value":`, `{}`, `[]`, `null`, `{"value":"x"} {}`,
		`{"secret":"a","selector":"app=x","mode":256}`, `{"x":1}`, "\x00", `"\ud800"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, v := range []any{&PutSecretRequest{}, &policy.Binding{}, &CreateTokenRequest{}, &EvaluateRequest{}} {
			r := httptest.NewRequest("PUT", "/", strings.NewReader(body))
			err := decode(r, 4096, v)
			if err == nil {
				continue
			}
			if !errors.Is(err, errBadRequest) && !errors.Is(err, errTooLarge) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			if len(body) >= 8 && strings.Contains(err.Error(), body) {
				t.Fatalf("error echoes the body: %v", err)
			}
		}
	})
}
