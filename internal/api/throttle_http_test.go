package api_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestThrottleByNetworkOverHTTP: failures from some addresses of a network
// slow down all of it, with 429 and Retry-After, even with a good token.
func TestThrottleByNetworkOverHTTP(t *testing.T) {
	e := newEnv(t)
	h := e.srv.Config.Handler
	req := func(src, tok string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/v1/secrets", nil)
		r.RemoteAddr = src
		if tok != "" {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for i := range 5 {
		if w := req(fmt.Sprintf("198.51.100.%d:4000", i+1), "bad"); w.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i, w.Code)
		}
	}
	w := req("198.51.100.77:4000", e.admin)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Fatalf("another address of the /24 with a good token: %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	if w := req("198.51.101.1:4000", e.admin); w.Code != 200 {
		t.Fatalf("the next /24: %d", w.Code)
	}
	for i := range 5 {
		req(fmt.Sprintf("[2001:db8:5:6::%x]:4000", i+1), "bad")
	}
	if w := req("[2001:db8:5:6:ffff::1]:4000", e.admin); w.Code != http.StatusTooManyRequests {
		t.Fatalf("another address of the /64: %d", w.Code)
	}
}
