// Package aws links Coffer secrets to AWS Secrets Manager secrets, through
// the official SDK (github.com/aws/aws-sdk-go-v2/service/secretsmanager).
//
// An item is a secret name or its full ARN; its value is the AWSCURRENT
// version's SecretString (or SecretBinary), and the version is that
// version's VersionId. Check lists every secret with ListSecrets, 100 per
// page, whose entries carry SecretVersionsToStages (next to LastChangedDate):
// that gives each item's AWSCURRENT version for ceil(secrets in the account
// / 100) calls per check, whatever the number of linked items. Items the listing does not
// show are confirmed one by one with DescribeSecret before being reported
// gone; with change_detection: describe (or when ListSecrets is not
// allowed) every item is checked with DescribeSecret.
//
// Credentials come from the SDK's default chain (environment, shared
// config and credentials files, SSO, web identity, ECS/EC2 roles), or a
// named profile.
package aws

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"

	"coffer/internal/keystore"
)

// Type is the `type:` value that selects this upstream.
const Type = "aws-secrets-manager"

// DefaultPollInterval: one paged ListSecrets every 10 s.
const DefaultPollInterval = 10 * time.Second

// Builtin describes the implementation for the builtins list.
func Builtin() keystore.Builtin {
	return keystore.Builtin{
		Type:                Type,
		DefaultPollInterval: DefaultPollInterval,
		NewConfig:           func() keystore.UpstreamConfig { return &Config{ChangeDetection: "list"} },
	}
}

// Config is an AWS Secrets Manager upstream's own configuration keys.
type Config struct {
	Region   string `yaml:"region"`   // e.g. eu-west-1
	Profile  string `yaml:"profile"`  // a shared config profile; default: the default chain
	Endpoint string `yaml:"endpoint"` // endpoint override (a VPC endpoint, a test server)
	CAFile   string `yaml:"ca_file"`  // PEM bundle to trust for the endpoint
	// ChangeDetection is "list" (ListSecrets, the default) or "describe"
	// (DescribeSecret per item: each secret's own metadata, one call per
	// item; AWS documents ListSecrets as eventually consistent).
	ChangeDetection string `yaml:"change_detection"`

	// Not in YAML, for tests: extra SDK load options (static credentials,
	// no shared files) and the most attempts per request (default: the
	// SDK's 3).
	LoadOptions []func(*config.LoadOptions) error `yaml:"-"`
	MaxAttempts int                               `yaml:"-"`
}

var regionPattern = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`)

// Validate implements keystore.UpstreamConfig.
func (c *Config) Validate() error {
	if !regionPattern.MatchString(c.Region) {
		return fmt.Errorf("region %q: want an AWS region such as eu-west-1", c.Region)
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.User != nil || u.RawQuery != "" {
			return fmt.Errorf("endpoint %q: want https://host[:port]", c.Endpoint)
		}
		if u.Scheme == "http" && !loopback(u.Hostname()) {
			return fmt.Errorf("endpoint %q: plain http is allowed to a loopback address only", c.Endpoint)
		}
	}
	switch c.ChangeDetection {
	case "":
		c.ChangeDetection = "list"
	case "list", "describe":
	default:
		return fmt.Errorf("change_detection %q: want list or describe", c.ChangeDetection)
	}
	if c.MaxAttempts < 0 || c.MaxAttempts > 10 {
		return fmt.Errorf("max attempts %d: must be 0 to 10", c.MaxAttempts)
	}
	return nil
}

// Open implements keystore.UpstreamConfig.
func (c *Config) Open(opts keystore.Options) (keystore.Keystore, error) { return New(*c, opts) }

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// A secret name: 1-512 of ASCII letters, digits and /_+=.@-. An ARN:
// arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME.
var (
	namePattern = regexp.MustCompile(`^[A-Za-z0-9/_+=.@-]{1,512}$`)
	arnPattern  = regexp.MustCompile(`^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]{1,512}$`)
)

func validateItem(item string) error {
	if namePattern.MatchString(item) || arnPattern.MatchString(item) {
		return nil
	}
	return fmt.Errorf("%w: AWS secret %q: want a secret name (letters, digits, /_+=.@-) or an ARN arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME",
		keystore.ErrInvalidRef, item)
}
