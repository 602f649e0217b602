package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func loadSeal(t *testing.T, yaml string, tune func(*Config)) (Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "server.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c := Defaults()
	if err := c.LoadFile(p); err != nil {
		return c, err
	}
	if tune != nil {
		tune(&c)
	}
	return c, c.Validate()
}

func TestSealConfig(t *testing.T) {
	c, err := loadSeal(t, "data_dir: /tmp/x\n", nil)
	if err != nil || c.Seal.Type != SealLocal || c.Seal.Transit != nil {
		t.Fatalf("default seal = %+v, %v", c.Seal, err)
	}
	c, err = loadSeal(t, `seal:
  type: vault-transit
  address: http://127.0.0.1:8200
  token_file: /etc/coffer/vault-token
  key: coffer-kek
  previous:
    - type: local
      master_key_file: /var/lib/coffer/master.key
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tc := c.Seal.Transit; tc == nil || tc.Key != "coffer-kek" || tc.Mount != "transit" || tc.TokenFile != "/etc/coffer/vault-token" {
		t.Fatalf("transit = %+v", c.Seal.Transit)
	}
	if len(c.Seal.Previous) != 1 || c.Seal.Previous[0].MasterKeyFile != "/var/lib/coffer/master.key" {
		t.Fatalf("previous = %+v", c.Seal.Previous)
	}
	c, err = loadSeal(t, "seal:\n  type: aws-kms\n  region: eu-west-1\n  key_id: alias/coffer\n  installation: prod-eu\n  endpoint: http://127.0.0.1:4599\n", nil)
	if err != nil || c.Seal.AWS == nil || c.Seal.AWS.Installation != "prod-eu" {
		t.Fatalf("aws = %+v, %v", c.Seal.AWS, err)
	}
	c, err = loadSeal(t, "seal:\n  type: azure-kv\n  vault_url: https://coffer.vault.azure.net\n  key: coffer-kek\n", nil)
	if err != nil || c.Seal.Azure == nil || c.Seal.Azure.Key != "coffer-kek" {
		t.Fatalf("azure = %+v, %v", c.Seal.Azure, err)
	}
	// --seal on the command line picks the type; the YAML has its options.
	c, err = loadSeal(t, "seal:\n  address: http://127.0.0.1:8200\n  token_file: /t\n  key: k\n", func(c *Config) { c.Seal.Type = SealVaultTransit })
	if err != nil || c.Seal.Transit == nil || c.Seal.Transit.Key != "k" {
		t.Fatalf("--seal vault-transit = %+v, %v", c.Seal, err)
	}
}

func TestSealConfigErrors(t *testing.T) {
	transit := "seal:\n  type: vault-transit\n  address: http://127.0.0.1:8200\n  token_file: /t\n  key: k\n"
	for _, tc := range []struct {
		name, yaml string
		tune       func(*Config)
		want       []string
	}{
		{"unknown key", "seal:\n  type: vault-transit\n  adress: http://127.0.0.1:8200\n", nil, []string{`unknown key "adress"`, "line 3", "known keys: address"}},
		{"unknown nested key", transit + "  approle: {role_id_file: /r, secretid: /s}\n", nil, []string{`unknown key "secretid"`, "seal: type vault-transit.approle"}},
		{"unknown type", "seal:\n  type: gcp-kms\n", nil, []string{`type "gcp-kms" is unknown`, "vault-transit"}},
		{"unknown local key", "seal:\n  key: x\n", nil, []string{`unknown key "key"`, "master_key_file"}},
		{"missing key", "seal:\n  type: vault-transit\n  address: http://127.0.0.1:8200\n  token_file: /t\n", nil, []string{"key"}},
		{"flag type with other options", transit, func(c *Config) { c.Seal.Type = SealAWSKMS }, []string{"type aws-kms", `unknown key "address"`}},
		{"aws without installation", "seal:\n  type: aws-kms\n  region: eu-west-1\n  key_id: alias/c\n", nil, []string{"installation"}},
		{"kms with key file", transit + "master_key_file: /m\n", nil, []string{"master_key_file", "seal.previous"}},
		{"kms with key file flag", transit, func(c *Config) { c.MasterKeyFile = "/m" }, []string{"--master-key-file"}},
		{"nested previous", transit + "  previous:\n    - type: local\n      master_key_file: /m\n      previous: []\n", nil, []string{"previous[0]", "no previous keys"}},
		{"previous without file", transit + "  previous:\n    - type: local\n", nil, []string{"seal.previous[0]", "master_key_file is missing"}},
		{"previous unknown key", transit + "  previous:\n    - type: local\n      file: /m\n", nil, []string{"seal.previous[0]", `unknown key "file"`}},
		{"duplicate key", transit + "  key: other\n", nil, []string{`"key" given twice`}},
		{"merge key", "base: &b {type: local}\nseal:\n  <<: *b\n", nil, []string{"merge"}},
		{"not a mapping", "seal: vault-transit\n", nil, []string{"want a mapping"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadSeal(t, tc.yaml, tc.tune)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseSealPrevious(t *testing.T) {
	if p, err := ParseSealPrevious("local:/var/lib/coffer/master.key"); err != nil || p.MasterKeyFile != "/var/lib/coffer/master.key" {
		t.Fatalf("= %+v, %v", p, err)
	}
	for _, bad := range []string{"", "local:", "/m", "vault-transit:x"} {
		if _, err := ParseSealPrevious(bad); err == nil || !strings.Contains(err.Error(), "--seal-previous") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
