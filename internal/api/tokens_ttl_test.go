package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestTokenTTLs: days and weeks are accepted; zero, negative and
// unparsable TTLs are 400 naming the field and change nothing; "never" is
// the only way to say "no expiry" explicitly, and join tokens must expire.
func TestTokenTTLs(t *testing.T) {
	e := newEnv(t)
	day := 24 * time.Hour
	for _, tc := range []struct {
		role, ttl string
		want      time.Duration // 0: no expiry
	}{
		{"operator", "30d", 30 * day},
		{"viewer", "2w", 14 * day},
		{"auditor", "1w3d12h", 10*day + 12*time.Hour},
		{"operator", "90m", 90 * time.Minute},
		{"admin", "never", 0},
		{"agent", "7d", 7 * day},
	} {
		var tok struct {
			Created time.Time `json:"created"`
			Expires time.Time `json:"expires"`
		}
		if code := e.json(e.admin, "POST", "/v1/tokens", map[string]any{"role": tc.role, "ttl": tc.ttl}, &tok); code != http.StatusCreated {
			t.Fatalf("ttl %q: %d", tc.ttl, code)
		}
		if got := tok.Expires.Sub(tok.Created); tc.want == 0 && !tok.Expires.IsZero() || tc.want != 0 && got != tc.want {
			t.Errorf("ttl %q: expires after %v, want %v", tc.ttl, got, tc.want)
		}
	}
	before := len(e.tokens.List())
	for _, tc := range []struct{ role, ttl, msg string }{
		{"operator", "0s", `use \"never\"`},
		{"operator", "0d", "must be positive"},
		{"operator", "-1h", "30d or 2w"},
		{"operator", "30x", "30d or 2w"},
		{"operator", "36501d", "too long"},
		{"agent", "never", "a join token must expire"},
		{"agent", "8d", "join tokens live at most"},
	} {
		code, body := e.do(e.admin, "POST", "/v1/tokens", `{"role": "`+tc.role+`", "ttl": "`+tc.ttl+`"}`)
		if code != http.StatusBadRequest || !strings.Contains(body, "ttl") || !strings.Contains(body, tc.msg) {
			t.Errorf("role %s ttl %q: %d %s", tc.role, tc.ttl, code, body)
		}
	}
	if n := len(e.tokens.List()); n != before {
		t.Fatalf("refused requests made tokens: %d → %d", before, n)
	}
}
