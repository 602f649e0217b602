package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "server.yaml")
	os.WriteFile(p, []byte("data_dir: /var/lib/coffer\nlisten: 127.0.0.1:9443\nsan: [coffer.example.com, 10.0.0.1]\nmax_versions: 5\nagent_cert_ttl: 12h\n"), 0o600)
	c := Defaults()
	if err := c.LoadFile(p); err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/var/lib/coffer" || c.Listen != "127.0.0.1:9443" || len(c.SANs) != 2 || c.MaxVersions != 5 || c.AgentCertTTL != 12*time.Hour || c.MaxValueSize != 1<<20 {
		t.Fatalf("config = %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"unknown_key: 1\n", "max_versions: many\n", "listen: [\n"} {
		os.WriteFile(p, []byte(bad), 0o600)
		c := Defaults()
		if err := c.LoadFile(p); err == nil {
			t.Errorf("config %q accepted", bad)
		}
	}
	for _, mut := range []func(*Config){
		func(c *Config) { c.MaxVersions = 0 },
		func(c *Config) { c.MaxValueSize = 0 },
		func(c *Config) { c.AgentCertTTL = time.Second },
		func(c *Config) { c.DataDir = "" },
	} {
		c := Defaults()
		mut(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "config:") {
			t.Errorf("Validate = %v", err)
		}
	}
}
