// Package builtin is the explicit list of keystore upstreams that
// coffer-server links (no init-time registration), and the keystores
// section of its configuration decoded with that list.
package builtin

import (
	"fmt"
	"log/slog"

	"gopkg.in/yaml.v3"

	"coffer/internal/keystore"
	"coffer/internal/keystore/aws"
	"coffer/internal/keystore/azure"
	"coffer/internal/keystore/ccp"
	"coffer/internal/keystore/conjur"
	"coffer/internal/keystore/vault"
	"coffer/internal/keystore/vaultdynamic"
)

// List returns the built-in upstream types.
func List() []keystore.Builtin {
	return []keystore.Builtin{
		aws.Builtin(),
		azure.Builtin(),
		ccp.Builtin(),
		conjur.Builtin(),
		vault.Builtin(),
		vaultdynamic.Builtin(),
	}
}

// Config is the keystores section of coffer-server's YAML configuration,
// as a field of its config struct:
//
//	Keystores builtin.Config `yaml:"keystores"`
//
// Decoding it is strict: unknown keys and types are errors wrapping
// keystore.ErrConfig (see keystore.DecodeConfig).
type Config struct {
	Upstreams []keystore.Upstream // sorted by name
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (c *Config) UnmarshalYAML(n *yaml.Node) error {
	ups, err := keystore.DecodeConfig(n, List())
	if err != nil {
		return err
	}
	c.Upstreams = ups
	return nil
}

// Open opens every configured upstream. It reads credential files but does
// no network I/O. On error it closes what it opened.
func (c Config) Open(logger *slog.Logger, hashKey []byte) (keystore.Set, error) {
	set := keystore.Set{}
	for _, u := range c.Upstreams {
		if u.IsIssuer() {
			continue // see OpenIssuers
		}
		ks, err := u.Open(logger, hashKey)
		if err != nil {
			set.Close()
			return nil, fmt.Errorf("keystores.%s: %w", u.Name, err)
		}
		set[u.Name] = ks
	}
	return set, nil
}

// OpenIssuers opens every configured upstream that issues credentials
// (type vault-dynamic), which Open leaves out. It reads credential files
// but does no network I/O.
func (c Config) OpenIssuers(logger *slog.Logger) (keystore.Issuers, error) {
	set := keystore.Issuers{}
	for _, u := range c.Upstreams {
		if !u.IsIssuer() {
			continue
		}
		is, err := u.OpenIssuer(keystore.Options{Logger: logger})
		if err != nil {
			set.Close()
			return nil, fmt.Errorf("keystores.%s: %w", u.Name, err)
		}
		set[u.Name] = is
	}
	return set, nil
}
