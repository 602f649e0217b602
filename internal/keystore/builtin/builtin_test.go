package builtin

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"coffer/internal/keystore"
	"coffer/internal/keystore/keystoretest"
)

// TestConfig decodes every built-in type from one YAML document, as
// coffer-server's strict decoder will, and opens them.
func TestConfig(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "conjur-key")
	os.WriteFile(key, []byte("api-key\n"), 0o600)
	pki := keystoretest.NewPKI(t)
	cert, ckey := pki.Issue(t, "coffer", false)
	doc := `
listen: 127.0.0.1:7443
keystores:
  vault:
    type: vault
    address: https://127.0.0.1:8200
    token_file: /etc/coffer/vault-token
    kv_mount: secret
    poll_interval: 2s
  aws:
    type: aws-secrets-manager
    region: eu-west-1
    endpoint: http://127.0.0.1:4566
  azure:
    type: azure-key-vault
    vault_url: https://coffer.vault.azure.net
  conjur:
    type: conjur
    url: https://conjur.example
    account: myorg
    host_id: host/coffer
    api_key_file: ` + key + `
  ccp:
    type: cyberark-ccp
    url: https://ccp.example
    app_id: Coffer
    cert_file: ` + cert + `
    key_file: ` + ckey + `
    max_value_size: 4096
`
	var cfg struct {
		Listen    string `yaml:"listen"`
		Keystores Config `yaml:"keystores"`
	}
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	got := map[string]keystore.Upstream{}
	for _, u := range cfg.Keystores.Upstreams {
		got[u.Name] = u
	}
	for name, want := range map[string]struct {
		typ  string
		poll time.Duration
	}{
		"vault": {"vault", 2 * time.Second}, "aws": {"aws-secrets-manager", 10 * time.Second}, "azure": {"azure-key-vault", 10 * time.Second},
		"conjur": {"conjur", 10 * time.Second}, "ccp": {"cyberark-ccp", 10 * time.Second},
	} {
		if u := got[name]; u.Type != want.typ || u.PollInterval != want.poll {
			t.Errorf("%s: type %q poll %s, want %q %s", name, u.Type, u.PollInterval, want.typ, want.poll)
		}
	}
	if got["ccp"].MaxValueSize != 4096 {
		t.Errorf("ccp max_value_size %d", got["ccp"].MaxValueSize)
	}
	set, err := cfg.Keystores.Open(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if len(set) != 5 {
		t.Fatalf("opened %d upstreams", len(set))
	}
	if r, err := set.ParseRef("vault:payments/db#password"); err != nil || r.Key != "password" {
		t.Errorf("ParseRef: %+v %v", r, err)
	}
	for ref, want := range map[string]string{
		"nosuch:x":         `upstream "nosuch" is not configured (configured: aws, azure, ccp, conjur, vault)`,
		"azure:a/b":        "Key Vault secret name",
		"ccp:NoObject":     "want Safe/Object",
		"vault:/abs":       "no leading or trailing '/'",
		"aws:arn:aws:s3:x": "want a secret name",
	} {
		if _, err := set.ParseRef(ref); !errors.Is(err, keystore.ErrInvalidRef) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRef(%q) = %v, want %q", ref, err, want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for doc, want := range map[string]string{
		"keystores:\n  v:\n    type: vault\n    address: https://x\n    token_file: t\n    approle: {role_id_file: r, secret_id_file: s}\n": "exactly one",
		"keystores:\n  v:\n    type: hashicorp\n":                                                 `type "hashicorp" is unknown (one of aws-secrets-manager, azure-key-vault, conjur, cyberark-ccp, vault, vault-dynamic)`,
		"keystores:\n  a:\n    type: aws-secrets-manager\n    region: eu-west-1\n    regoin: x\n": `unknown key "regoin"`,
		"keystores:\n  z:\n    type: azure-key-vault\n    vault_url: http://x\n":                  `vault_url "http://x"`,
	} {
		var cfg struct {
			Keystores Config `yaml:"keystores"`
		}
		err := yaml.Unmarshal([]byte(doc), &cfg)
		if !errors.Is(err, keystore.ErrConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", doc, err, want)
		}
	}
}

func TestOpenFailsOnMissingCredentialFile(t *testing.T) {
	var cfg Config
	err := yaml.Unmarshal([]byte("c:\n  type: conjur\n  url: https://c\n  account: o\n  host_id: h\n  api_key_file: /nonexistent\n"), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Open(nil, nil); !errors.Is(err, keystore.ErrConfig) || !strings.Contains(err.Error(), "keystores.c") {
		t.Fatalf("Open: %v", err)
	}
}
