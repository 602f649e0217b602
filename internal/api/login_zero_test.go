package api_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"coffer/internal/api"
	"coffer/internal/authz"
	"coffer/internal/directory"
)

// keeper is a Directory that keeps the password buffer it was given, to
// look at it after the request.
type keeper struct {
	seen []byte
	copy string
}

func (k *keeper) Authenticate(_ context.Context, user string, password []byte) (directory.Identity, error) {
	k.seen, k.copy = password, string(password)
	return directory.Identity{User: user, Groups: []string{"cn=ops,dc=x"}}, nil
}

// The password the directory was handed is zeroed once the login is done.
func TestLoginZeroesThePassword(t *testing.T) {
	k := &keeper{}
	e := newEnv(t, func(c *api.Config) {
		c.Login = &api.Login{Directory: k, Source: "ldap", TTL: time.Hour,
			Groups: directory.Mapping{"cn=ops,dc=x": {Role: authz.Viewer}}}
	})
	if code, body := e.do("", "POST", "/v1/login", loginBody("zed", `pa\ss"word`)); code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	if k.copy != `pa\ss"word` {
		t.Fatalf("the directory got %q", k.copy)
	}
	for i, b := range k.seen {
		if b != 0 {
			t.Fatalf("password byte %d not zeroed: %q", i, k.seen)
		}
	}
}
