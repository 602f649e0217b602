package vault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"coffer/internal/keystore"
)

// errNoToken wraps failures to read a token or login material from files.
var errNoToken = errors.New("no usable Vault credentials")

// Auth holds Coffer's Vault token and keeps it alive: a token file is
// re-read when Vault rejects the token or its TTL runs out, and renewed
// while renewable; AppRole and cert logins are renewed, and repeated when a
// renewal fails or the lease nears its maximum. It is shared by the KV
// upstream and the Transit master key.
type Auth struct {
	cfg Config
	c   *api.Client
	log *slog.Logger

	mu        sync.Mutex
	tok       string
	lease     time.Duration // the token's TTL when obtained or last renewed
	renewable bool
	refreshAt time.Time // zero: never
}

// NewAuth returns the authenticator for cfg's auth method, using c (from
// NewClient) for its requests.
func NewAuth(cfg Config, c *api.Client, log *slog.Logger) *Auth {
	if log == nil {
		log = slog.Default()
	}
	return &Auth{cfg: cfg, c: c, log: log}
}

// Token returns a token to use now.
func (a *Auth) Token(ctx context.Context) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tok != "" && (a.refreshAt.IsZero() || time.Now().Before(a.refreshAt)) {
		return a.tok, nil
	}
	if a.tok != "" && a.renewable {
		if err := a.renew(ctx); err == nil {
			return a.tok, nil
		} else {
			a.log.Info("vault: token renewal refused; authenticating again", "err", keystore.Detail(err.Error()))
		}
	}
	if err := a.acquire(ctx); err != nil {
		return "", err
	}
	return a.tok, nil
}

// Reauth is called after Vault answered 403 to a request made with used.
// It reports whether a retry with a new token makes sense.
func (a *Auth) Reauth(ctx context.Context, used string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tok != used {
		return a.tok != "" // another request already replaced it
	}
	if err := a.acquire(ctx); err != nil {
		a.log.Warn("vault: authenticating again after a 403 failed", "err", keystore.Detail(err.Error()))
		return false
	}
	return a.tok != used
}

// acquire gets a new token: from the file, or by logging in.
func (a *Auth) acquire(ctx context.Context) error {
	a.tok, a.renewable, a.lease, a.refreshAt = "", false, 0, time.Time{}
	switch {
	case a.cfg.TokenFile != "":
		return a.loadFile(ctx)
	case a.cfg.AppRole != nil:
		roleID, err := keystore.ReadSecretFile("approle.role_id_file", a.cfg.AppRole.RoleIDFile)
		if err != nil {
			return fmt.Errorf("%w: %w", errNoToken, err)
		}
		secretID, err := keystore.ReadSecretFile("approle.secret_id_file", a.cfg.AppRole.SecretIDFile)
		if err != nil {
			clear(roleID)
			return fmt.Errorf("%w: %w", errNoToken, err)
		}
		body := map[string]any{"role_id": string(roleID), "secret_id": string(secretID)}
		clear(roleID)
		clear(secretID)
		return a.login(ctx, "auth/"+a.cfg.AppRole.Mount+"/login", body)
	default:
		body := map[string]any{}
		if a.cfg.Cert.Role != "" {
			body["name"] = a.cfg.Cert.Role
		}
		return a.login(ctx, "auth/"+a.cfg.Cert.Mount+"/login", body)
	}
}

// Client returns a shallow copy of the client carrying token ("" none).
func (a *Auth) Client(token string) *api.Client {
	c := a.c.WithNamespace(a.cfg.Namespace)
	if token == "" {
		c.ClearToken()
	} else {
		c.SetToken(token)
	}
	return c
}

func (a *Auth) login(ctx context.Context, path string, body map[string]any) error {
	s, err := a.Client("").Logical().WriteWithContext(ctx, path, body)
	if err != nil {
		return err
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return fmt.Errorf("%w: %s returned no token", errNoToken, path)
	}
	a.tok = s.Auth.ClientToken
	a.setLease(time.Duration(s.Auth.LeaseDuration)*time.Second, s.Auth.Renewable)
	return nil
}

// loadFile reads the token file and asks Vault about the token's TTL.
func (a *Auth) loadFile(ctx context.Context) error {
	b, err := keystore.ReadSecretFile("token_file", a.cfg.TokenFile)
	if err != nil {
		return fmt.Errorf("%w: %w", errNoToken, err)
	}
	a.tok = string(b)
	clear(b)
	s, err := a.Client(a.tok).Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		// Perhaps a policy without lookup-self: use the token as it is,
		// and look again in a minute.
		a.refreshAt = time.Now().Add(time.Minute)
		return nil
	}
	ttl, _ := s.TokenTTL()
	renewable, _ := s.TokenIsRenewable()
	a.setLease(ttl, renewable)
	if a.refreshAt.IsZero() {
		a.refreshAt = time.Now().Add(5 * time.Minute) // a token that never expires: re-read the file now and then
	}
	return nil
}

// setLease schedules the next renewal (renewable) or re-acquisition.
func (a *Auth) setLease(ttl time.Duration, renewable bool) {
	a.lease, a.renewable = ttl, renewable
	switch {
	case ttl <= 0:
		a.refreshAt = time.Time{}
	case renewable:
		a.refreshAt = time.Now().Add(ttl / 2)
	default:
		a.refreshAt = time.Now().Add(ttl * 9 / 10)
	}
}

// renew renews the current token. A renewal that comes back much shorter
// than asked means the lease nears its maximum TTL: then the next use
// authenticates anew.
func (a *Auth) renew(ctx context.Context) error {
	s, err := a.Client(a.tok).Auth().Token().RenewSelfWithContext(ctx, 0)
	if err != nil {
		return err
	}
	if s == nil || s.Auth == nil {
		return errors.New("renew-self returned no lease")
	}
	ttl := time.Duration(s.Auth.LeaseDuration) * time.Second
	if ttl < a.lease/2 && a.cfg.TokenFile == "" {
		a.lease, a.renewable = ttl, false
		a.refreshAt = time.Now().Add(ttl * 9 / 10)
		return nil
	}
	a.setLease(ttl, s.Auth.Renewable)
	return nil
}

// Close forgets the token.
func (a *Auth) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tok = ""
	a.refreshAt = time.Time{}
}
