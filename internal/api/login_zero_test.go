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

// blocker is a Directory that hangs until released.
type blocker struct {
	entered chan struct{}
	release chan struct{}
}

func (b *blocker) Authenticate(ctx context.Context, user string, _ []byte) (directory.Identity, error) {
	b.entered <- struct{}{}
	<-b.release
	return directory.Identity{User: user, Groups: []string{"cn=ops,dc=x"}}, nil
}

// A hung directory ties up at most MaxConcurrent logins; the next one is
// told to come back (503), at once.
func TestLoginConcurrencyBound(t *testing.T) {
	b := &blocker{entered: make(chan struct{}, 4), release: make(chan struct{})}
	e := newEnv(t, func(c *api.Config) {
		c.Login = &api.Login{Directory: b, Source: "ldap", TTL: time.Hour, MaxConcurrent: 2,
			Groups: directory.Mapping{"cn=ops,dc=x": {Role: authz.Viewer}}}
	})
	done := make(chan int, 2)
	for range 2 {
		go func() {
			c, _ := e.from("10.9.0.1", loginBody("zed", "pw"))
			done <- c
		}()
	}
	<-b.entered
	<-b.entered
	if code, body := e.from("10.9.0.2", loginBody("zed", "pw")); code != http.StatusServiceUnavailable {
		t.Errorf("third login while two hang: %d %s", code, body)
	}
	close(b.release)
	for range 2 {
		if c := <-done; c != http.StatusOK {
			t.Errorf("a held login: %d", c)
		}
	}
	if code, _ := e.from("10.9.0.2", loginBody("zed", "pw")); code != http.StatusOK {
		t.Errorf("after the directory answered: %d", code)
	}
}
