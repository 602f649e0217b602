package server

import (
	"bytes"
	"fmt"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"coffer/internal/directory/ldap"
	"coffer/internal/keystore/builtin"
)

// Config is coffer-server's configuration, from flags or a YAML file.
type Config struct {
	DataDir       string        `yaml:"data_dir"`
	Listen        string        `yaml:"listen"`
	SANs          []string      `yaml:"san"`
	MasterKeyFile string        `yaml:"master_key_file"` // local seal: default <data_dir>/master.key
	Seal          SealConfig    `yaml:"seal"`            // where the master key is; default local
	MaxVersions   int           `yaml:"max_versions"`
	MaxValueSize  int           `yaml:"max_value_size"`
	AgentCertTTL  time.Duration `yaml:"agent_cert_ttl"`
	LogLevel      string        `yaml:"log_level"`
	// Store is where secrets, bindings, tokens and agents live: "bolt"
	// (default, one file in the data dir) or "etcd" (shared by several
	// servers; see docs/ha.md), configured by Etcd. EtcdJoin makes a
	// server on etcd join an existing installation only: an empty prefix
	// (a wrong --etcd-prefix or endpoints for a new data dir) is then an
	// error instead of a new installation. Advertise is the host:port at
	// which clients reach this server, as listed to them among the
	// installation's servers; default: the listening address, or the host
	// name and its port when it listens on all addresses.
	Store     string     `yaml:"store"`
	Etcd      EtcdConfig `yaml:"etcd"`
	EtcdJoin  bool       `yaml:"etcd_join"`
	Advertise string     `yaml:"advertise"`
	// AuditReanchor accepts, for one start after an investigation, an
	// audit trail that ends before the head anchored in the store (records
	// cut, or the file moved aside): the loss is logged and recorded as
	// the next record. Leave it off otherwise: it turns off the check.
	AuditReanchor bool `yaml:"audit_reanchor"`
	// DeletedRetention is how long a deleted secret can be restored
	// (coffer secret undelete) before its versions are destroyed.
	DeletedRetention time.Duration `yaml:"deleted_retention"`
	// Keystores are the upstream keystores secrets may be linked to
	// (coffer secret link NAME --from UPSTREAM:ITEM[#KEY]); see
	// docs/keystores.md.
	Keystores builtin.Config `yaml:"keystores"`
	// LDAP, if set, enables directory logins (POST /v1/login); docs/ldap.md.
	LDAP *ldap.Config `yaml:"ldap"`
	// Kubernetes, if its kubeconfig is set, lets the server read the
	// cluster's API server (docs/kubernetes.md).
	Kubernetes KubernetesConfig `yaml:"kubernetes"`
}

// KubernetesConfig is how the server reaches a Kubernetes API server.
type KubernetesConfig struct {
	// Kubeconfig is a kubeconfig file, or "in-cluster" for the
	// ServiceAccount of the pod the server runs in; empty: none.
	Kubeconfig string `yaml:"kubeconfig"`

	// Node attestation (kubeattest.go): agents whose pods run as one of
	// AgentServiceAccounts ("namespace/name") enroll with their projected
	// token of audience AgentAudience instead of a join token, under their
	// node's name (after AgentNamePrefix), with host labels k8s.node=NODE
	// and AgentLabels, and scope AgentScope. AgentTokenMaxTTL bounds the
	// tokens' lifetime; AgentReenroll (default true) lets a reimaged
	// node's new agent replace its previous enrollment.
	AgentServiceAccounts []string          `yaml:"agent_service_accounts"`
	AgentAudience        string            `yaml:"agent_audience"`
	AgentLabels          map[string]string `yaml:"agent_labels"`
	AgentScope           string            `yaml:"agent_scope"`
	AgentNamePrefix      string            `yaml:"agent_name_prefix"`
	AgentTokenMaxTTL     time.Duration     `yaml:"agent_token_max_ttl"`
	AgentReenroll        *bool             `yaml:"agent_reenroll"`
}

// Store types.
const (
	StoreBolt = "bolt"
	StoreEtcd = "etcd"
)

// Defaults returns the default configuration.
func Defaults() Config {
	return Config{
		DataDir:          "./coffer-data",
		Listen:           "127.0.0.1:7443",
		MaxVersions:      10,
		MaxValueSize:     1 << 20,
		AgentCertTTL:     24 * time.Hour,
		LogLevel:         "info",
		Seal:             SealConfig{Type: SealLocal},
		DeletedRetention: 7 * 24 * time.Hour,
		Store:            StoreBolt,
	}
}

// LoadFile reads a YAML config file over c. Unknown keys are errors.
func (c *Config) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	switch {
	case c.DataDir == "":
		return fmt.Errorf("config: data_dir is empty")
	case c.Listen == "":
		return fmt.Errorf("config: listen is empty")
	case c.MaxVersions < 1 || c.MaxVersions > 1000:
		return fmt.Errorf("config: max_versions %d: must be 1 to 1000", c.MaxVersions)
	case c.MaxValueSize < 1 || c.MaxValueSize > 64<<20:
		return fmt.Errorf("config: max_value_size %d: must be 1 byte to 64 MiB", c.MaxValueSize)
	case c.AgentCertTTL < 10*time.Minute || c.AgentCertTTL > 90*24*time.Hour:
		return fmt.Errorf("config: agent_cert_ttl %s: must be 10m to 2160h", c.AgentCertTTL)
	case c.DeletedRetention < time.Minute || c.DeletedRetention > 365*24*time.Hour:
		return fmt.Errorf("config: deleted_retention %s: must be 1m to 8760h", c.DeletedRetention)
	}
	switch c.Store {
	case StoreBolt, "":
		if len(c.Etcd.Endpoints) > 0 || c.EtcdJoin || c.Etcd.Prefix != "" || c.Etcd.CAFile != "" || c.Etcd.CertFile != "" || c.Etcd.KeyFile != "" {
			return fmt.Errorf("config: etcd options are set but store is %q: set store: etcd (--store etcd)", StoreBolt)
		}
	case StoreEtcd:
		if len(c.Etcd.Endpoints) == 0 {
			return fmt.Errorf("config: store etcd: etcd.endpoints is empty: give the client URLs of the etcd members (--etcd-endpoints http://127.0.0.1:2379,...)")
		}
	default:
		return fmt.Errorf("config: store %q: must be %s or %s", c.Store, StoreBolt, StoreEtcd)
	}
	if err := c.Seal.validate(c.MasterKeyFile); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if c.LDAP != nil {
		if err := c.LDAP.Validate(); err != nil {
			return fmt.Errorf("config: ldap: %w", err)
		}
	}
	if err := c.Kubernetes.validateAttestation(); err != nil {
		return fmt.Errorf("config: kubernetes: %w", err)
	}
	return nil
}
