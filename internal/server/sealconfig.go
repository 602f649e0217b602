package server

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"coffer/internal/seal/awskms"
	"coffer/internal/seal/azurekv"
	"coffer/internal/seal/transit"
)

// Seal types: where the master key is.
const (
	SealLocal        = "local"         // a key file on the server (master_key_file)
	SealVaultTransit = "vault-transit" // a Vault Transit key
	SealAWSKMS       = "aws-kms"       // an AWS KMS key
	SealAzureKV      = "azure-kv"      // an Azure Key Vault key
)

// SealTypes lists the seal types, for messages.
var SealTypes = []string{SealLocal, SealVaultTransit, SealAWSKMS, SealAzureKV}

// SealConfig says where the master key is: the `seal:` section of the
// server's config. Besides `type` and `previous` it holds the type's own
// keys (those of transit.Config, awskms.Config or azurekv.Config, or
// master_key_file for local):
//
//	seal:
//	  type: vault-transit
//	  address: https://vault.example:8200
//	  ca_file: /etc/coffer/vault-ca.pem
//	  token_file: /etc/coffer/vault-token
//	  mount: transit
//	  key: coffer-kek
//	  previous:                 # during a rewrap only: keys that still open old values
//	    - type: local
//	      master_key_file: /var/lib/coffer/master.key
//
// The type's keys are decoded when the configuration is validated, after
// the command line may have changed the type (--seal); an unknown key is an
// error naming it.
type SealConfig struct {
	Type          string
	MasterKeyFile string          // local only
	Transit       *transit.Config // vault-transit only
	AWS           *awskms.Config  // aws-kms only
	Azure         *azurekv.Config // azure-kv only
	// Previous are master keys that only open values sealed before a
	// move to this one (see coffer-server rewrap and docs/keystores.md).
	Previous []SealConfig

	opts     *yaml.Node // the type's own keys, as written
	resolved bool
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (c *SealConfig) UnmarshalYAML(n *yaml.Node) error { return c.unmarshal(n, false) }

func (c *SealConfig) unmarshal(n *yaml.Node, nested bool) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: seal: want a mapping with type: (one of %s)", n.Line, strings.Join(SealTypes, ", "))
	}
	*c = SealConfig{opts: &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			return fmt.Errorf("line %d: seal: key %q given twice", k.Line, k.Value)
		}
		seen[k.Value] = true
		switch k.Value {
		case "<<":
			return fmt.Errorf("line %d: seal: merge keys (<<) are not supported", k.Line)
		case "type":
			if err := v.Decode(&c.Type); err != nil {
				return fmt.Errorf("seal: type: %w", err)
			}
		case "previous":
			if nested {
				return fmt.Errorf("line %d: seal: a previous key has no previous keys", k.Line)
			}
			if v.Kind != yaml.SequenceNode {
				return fmt.Errorf("line %d: seal: previous: want a list of master keys", v.Line)
			}
			for j, e := range v.Content {
				var p SealConfig
				if err := p.unmarshal(e, true); err != nil {
					return fmt.Errorf("seal.previous[%d]: %w", j, err)
				}
				c.Previous = append(c.Previous, p)
			}
		default:
			c.opts.Content = append(c.opts.Content, k, v)
		}
	}
	return nil
}

// resolve decodes the type's own keys strictly and validates them. where
// names the section in errors.
func (c *SealConfig) resolve(where string) error {
	if c.resolved {
		return nil
	}
	if c.Type == "" {
		c.Type = SealLocal
	}
	var target any
	switch c.Type {
	case SealLocal:
		target = &struct {
			MasterKeyFile *string `yaml:"master_key_file"`
		}{&c.MasterKeyFile}
	case SealVaultTransit:
		if c.Transit == nil {
			c.Transit = &transit.Config{}
		}
		target = c.Transit
	case SealAWSKMS:
		if c.AWS == nil {
			c.AWS = &awskms.Config{}
		}
		target = c.AWS
	case SealAzureKV:
		if c.Azure == nil {
			c.Azure = &azurekv.Config{}
		}
		target = c.Azure
	default:
		return fmt.Errorf("%s: type %q is unknown (one of %s)", where, c.Type, strings.Join(SealTypes, ", "))
	}
	if c.opts != nil {
		if err := checkKeys(c.opts, reflect.TypeOf(target).Elem(), where+": type "+c.Type); err != nil {
			return err
		}
		if err := c.opts.Decode(target); err != nil {
			return fmt.Errorf("%s: type %s: %w", where, c.Type, err)
		}
	}
	var err error
	switch c.Type {
	case SealVaultTransit:
		err = c.Transit.Validate()
	case SealAWSKMS:
		err = c.AWS.Validate()
	case SealAzureKV:
		err = c.Azure.Validate()
	}
	if err != nil {
		return fmt.Errorf("%s: type %s: %w", where, c.Type, err)
	}
	c.resolved = true
	return nil
}

// checkKeys refuses a key of n that t (a struct, through pointers) has no
// yaml field for, at any depth.
func checkKeys(n *yaml.Node, t reflect.Type, where string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("%s: line %d: want a mapping", where, n.Line)
	}
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		fields[name] = f.Type
	}
	known := make([]string, 0, len(fields))
	for k := range fields {
		known = append(known, k)
	}
	sort.Strings(known)
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		ft, ok := fields[k.Value]
		if !ok {
			return fmt.Errorf("%s: line %d: unknown key %q (known keys: %s)", where, k.Line, k.Value, strings.Join(known, ", "))
		}
		if seen[k.Value] {
			return fmt.Errorf("%s: line %d: key %q given twice", where, k.Line, k.Value)
		}
		seen[k.Value] = true
		if err := checkKeys(n.Content[i+1], ft, where+"."+k.Value); err != nil {
			return err
		}
	}
	return nil
}

// validate resolves the section and its previous keys.
func (c *SealConfig) validate(topMasterKeyFile string) error {
	if err := c.resolve("seal"); err != nil {
		return err
	}
	if c.Type != SealLocal && (c.MasterKeyFile != "" || topMasterKeyFile != "") {
		return fmt.Errorf("seal: type %s keeps the master key in the KMS, but master_key_file (or --master-key-file) is set: remove it (to move a store off a key file, list it under seal.previous)", c.Type)
	}
	if c.Type == SealLocal && c.MasterKeyFile != "" && topMasterKeyFile != "" && c.MasterKeyFile != topMasterKeyFile {
		return fmt.Errorf("seal: master_key_file %s and the top-level master_key_file %s differ: give one", c.MasterKeyFile, topMasterKeyFile)
	}
	for i := range c.Previous {
		p := &c.Previous[i]
		where := fmt.Sprintf("seal.previous[%d]", i)
		if err := p.resolve(where); err != nil {
			return err
		}
		if p.Type == SealLocal && p.MasterKeyFile == "" {
			return fmt.Errorf("%s: type local: master_key_file is missing (the old key file)", where)
		}
	}
	return nil
}

// ParseSealPrevious parses the --seal-previous flag: local:FILE, the
// master key file a store is being moved away from.
func ParseSealPrevious(s string) (SealConfig, error) {
	typ, file, ok := strings.Cut(s, ":")
	if !ok || typ != SealLocal || file == "" {
		return SealConfig{}, fmt.Errorf("--seal-previous %q: want local:FILE (a KMS key as previous key is configured under seal.previous in the YAML config)", s)
	}
	return SealConfig{Type: SealLocal, MasterKeyFile: file}, nil
}

// describeKeyID says what kind of master key an id names, for messages.
func describeKeyID(id string) string {
	for _, t := range SealTypes[1:] {
		if strings.HasPrefix(id, t+":") {
			return id
		}
	}
	if isLocalKeyID(id) {
		return id + " (a local master key file)"
	}
	return id
}

// isLocalKeyID reports whether id is a seal.LocalKey's id.
func isLocalKeyID(id string) bool {
	return len(id) == 16 && strings.Trim(id, "0123456789abcdef") == ""
}
