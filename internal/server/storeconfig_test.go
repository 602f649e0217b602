package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The store section: etcd settings in YAML; a bad store type, etcd
// without endpoints, etcd options with the bolt store and unknown etcd keys
// are errors that name what is wrong.
func TestStoreConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "server.yaml")
	os.WriteFile(p, []byte("store: etcd\netcd:\n  endpoints: [https://e1:2379, https://e2:2379]\n  prefix: prod\n  ca_file: /etc/ca.pem\n  dial_timeout: 3s\nadvertise: coffer-1:7443\n"), 0o600)
	c := Defaults()
	if err := c.LoadFile(p); err != nil {
		t.Fatal(err)
	}
	if c.Store != StoreEtcd || len(c.Etcd.Endpoints) != 2 || c.Etcd.Prefix != "prod" || c.Etcd.CAFile != "/etc/ca.pem" ||
		c.Etcd.DialTimeout != 3*time.Second || c.Advertise != "coffer-1:7443" {
		t.Fatalf("config = %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p, []byte("store: etcd\netcd:\n  endpoint: [x]\n"), 0o600)
	if err := (&Config{}).LoadFile(p); err == nil || !strings.Contains(err.Error(), "endpoint") {
		t.Errorf("unknown etcd key: %v", err)
	}
	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Store = "zookeeper" }, `store "zookeeper"`},
		{func(c *Config) { c.Store = StoreEtcd }, "etcd.endpoints is empty"},
		{func(c *Config) { c.Etcd.Endpoints = []string{"http://127.0.0.1:2379"} }, "set store: etcd"},
	} {
		c := Defaults()
		tc.mut(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate = %v, want %q", err, tc.want)
		}
	}
}
