package server

import (
	"fmt"
	"log/slog"

	"coffer/internal/api"
	"coffer/internal/directory/ldap"
)

// ldapLogin builds the API's directory logins from the ldap: section, or
// nil without one. The directory is not asked anything at start: a server
// whose directory is down starts, and its logins answer 503 until it is
// back.
func ldapLogin(cfg Config, log *slog.Logger) (*api.Login, error) {
	if cfg.LDAP == nil {
		return nil, nil
	}
	d, err := ldap.New(*cfg.LDAP, log)
	if err != nil {
		return nil, fmt.Errorf("config: ldap: %w", err)
	}
	c := d.Config()
	log.Info("directory logins enabled", "url", c.URL, "groups", len(c.Groups), "session_ttl", c.SessionTTL)
	return &api.Login{Directory: d, Groups: c.Mapping(), TTL: c.SessionTTL, Source: "ldap", Timeout: 3 * c.Timeout}, nil
}
