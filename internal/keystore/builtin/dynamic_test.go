package builtin

import (
	"errors"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"coffer/internal/keystore"
)

// A vault-dynamic upstream is decoded like type vault (without kv_mount),
// left out of the keystore Set and opened as an Issuer.
func TestConfigVaultDynamic(t *testing.T) {
	doc := `
keystores:
  vault:
    type: vault
    address: http://127.0.0.1:8200
    token_file: /etc/coffer/vault-token
  vault-dynamic:
    type: vault-dynamic
    address: http://127.0.0.1:8200
    token_file: /etc/coffer/vault-token
    allow: [database/creds/app]
`
	var cfg struct {
		Keystores Config `yaml:"keystores"`
	}
	if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	set, err := cfg.Keystores.Open(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if _, ok := set["vault-dynamic"]; ok || len(set) != 1 {
		t.Fatalf("keystore set %v", set)
	}
	iss, err := cfg.Keystores.OpenIssuers(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	if len(iss) != 1 || !iss.Has("vault-dynamic:database/creds/app") || iss.Has("vault:database/creds/app") {
		t.Fatalf("issuers %v", iss)
	}
	if _, _, err := iss.ParseRef("vault-dynamic:database/creds/app"); err != nil {
		t.Fatal(err)
	}
	_, _, err = iss.ParseRef("vault-dynamic:database/creds/admin")
	if !errors.Is(err, keystore.ErrInvalidRef) || !strings.Contains(err.Error(), "allow list") || !strings.Contains(err.Error(), "vault-dynamic") {
		t.Fatalf("outside allow: %v", err)
	}
	if _, _, err := iss.ParseRef("vault:database/creds/app"); !errors.Is(err, keystore.ErrInvalidRef) {
		t.Fatalf("a keystore as issuer: %v", err)
	}

	bad := strings.Replace(doc, "    allow: [database/creds/app]\n", "    kv_mount: secret\n", 1)
	err = yaml.Unmarshal([]byte(bad), &cfg)
	if !errors.Is(err, keystore.ErrConfig) || !strings.Contains(err.Error(), `unknown key "kv_mount"`) {
		t.Fatalf("kv_mount on vault-dynamic: %v", err)
	}
}
