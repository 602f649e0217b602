package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzLoginJSON: the login body built without a string copy of the
// password is JSON that decodes back to the same username and password.
func FuzzLoginJSON(f *testing.F) {
	for _, s := range []string{"x", `a"b\c`, "tab\there\x00nul", "é😀", "\x7f\u2028"} {
		f.Add("alice", s)
	}
	f.Fuzz(func(t *testing.T, user, password string) {
		if !utf8.ValidString(user) || !utf8.ValidString(password) {
			return
		}
		var got struct{ Username, Password string }
		b := loginJSON(user, []byte(password))
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		if got.Username != user || got.Password != password {
			t.Fatalf("got %q %q, want %q %q", got.Username, got.Password, user, password)
		}
	})
}

// The session file works as a --token-file too: its comment lines are
// not part of the token.
func TestSessionFileIsATokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coffer", "token")
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	if err := writeSession(path, session{token: "coffer_0123456789abcdef_x", server: "https://127.0.0.1:7443", user: "ldap:alice", expires: exp}); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %o", fi.Mode().Perm())
	}
	c := &conn{}
	tok, err := c.readTokenFile(path, "--token-file")
	if err != nil || tok != "coffer_0123456789abcdef_x" {
		t.Fatalf("readTokenFile = %q, %v", tok, err)
	}
	s, err := readSession(path)
	if err != nil || s.server != "https://127.0.0.1:7443" || s.user != "ldap:alice" || !s.expires.Equal(exp) {
		t.Fatalf("readSession = %+v, %v", s, err)
	}
	t.Setenv("COFFER_SESSION_FILE", path)
	if tok, _ := c.sessionFor("https://127.0.0.1:7443"); tok == "" {
		t.Error("no session for its server")
	}
	if tok, _ := c.sessionFor("https://127.0.0.1:7444"); tok != "" {
		t.Error("the session was offered to another server")
	}
	writeSession(path, session{token: "coffer_0123456789abcdef_x", server: "https://127.0.0.1:7443", user: "ldap:alice", expires: time.Now().Add(-time.Minute)})
	if tok, _ := c.sessionFor("https://127.0.0.1:7443"); tok != "" {
		t.Error("an expired session was used")
	}
}
