// Package azure links Coffer secrets to Azure Key Vault secrets, through
// the official SDK (github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets)
// and azidentity's default credential chain.
//
// An item is a secret name; its value is the current version's value. Key
// Vault's secret listing (GET /secrets, 25 per page) carries each secret's
// attributes.updated and enabled flag, so Check costs ceil(secrets in the
// vault / 25) calls whatever the number of linked items, and never reads a
// value. The version Coffer records is that updated time (Key Vault's
// version ids are not in the listing); as it has one-second resolution, a
// stamp taken within a few seconds of a change is marked unsettled, so that
// a second change within the same second is still picked up once the stamp
// settles.
package azure

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"coffer/internal/keystore"
	"coffer/internal/secret"
)

// Type is the `type:` value that selects this upstream.
const Type = "azure-key-vault"

// DefaultPollInterval: one paged secret listing every 10 s.
const DefaultPollInterval = 10 * time.Second

// settle is how long after a change a stamp stays unsettled (updated has
// one-second resolution; this also covers small clock skew).
const settle = 5 * time.Second

// Builtin describes the implementation for the builtins list.
func Builtin() keystore.Builtin {
	return keystore.Builtin{
		Type:                Type,
		DefaultPollInterval: DefaultPollInterval,
		NewConfig:           func() keystore.UpstreamConfig { return &Config{} },
	}
}

// Config is an Azure Key Vault upstream's own configuration keys.
type Config struct {
	VaultURL string `yaml:"vault_url"` // https://NAME.vault.azure.net (or a test endpoint)
	TenantID string `yaml:"tenant_id"` // optional, for azidentity's default credential
	CAFile   string `yaml:"ca_file"`   // PEM bundle to trust for vault_url (tests, private endpoints)
	// DisableChallengeResourceVerification lets the bearer challenge name
	// a resource other than the vault's domain (needed for test endpoints).
	DisableChallengeResourceVerification bool `yaml:"disable_challenge_resource_verification"`

	// Not in YAML, for tests: a credential instead of the default chain,
	// and retries (0: the SDK's default, -1: none).
	Credential azcore.TokenCredential `yaml:"-"`
	MaxRetries int32                  `yaml:"-"`
}

// Validate implements keystore.UpstreamConfig.
func (c *Config) Validate() error {
	u, err := url.Parse(c.VaultURL)
	if c.VaultURL == "" || err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" ||
		(u.Path != "" && u.Path != "/") {
		return fmt.Errorf("vault_url %q: want https://NAME.vault.azure.net", c.VaultURL)
	}
	if c.DisableChallengeResourceVerification && !loopback(u.Hostname()) {
		// Off, a challenge from anywhere could get Coffer's token sent.
		return fmt.Errorf("disable_challenge_resource_verification is for test endpoints on a loopback address only")
	}
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Open implements keystore.UpstreamConfig.
func (c *Config) Open(opts keystore.Options) (keystore.Keystore, error) { return New(*c, opts) }

// ClientOptions returns the azcore options for cfg: its CA file, a response
// size cap, and retries. Shared with the Key Vault key wrapper.
func ClientOptions(caFile string, bodyLimit int64, maxRetries int32) (azcore.ClientOptions, error) {
	pool, err := keystore.CertPool(caFile)
	if err != nil {
		return azcore.ClientOptions{}, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	o := azcore.ClientOptions{Transport: &http.Client{Transport: keystore.LimitTransport(tr, bodyLimit)}}
	if maxRetries != 0 {
		o.Retry = policy.RetryOptions{MaxRetries: maxRetries, RetryDelay: 200 * time.Millisecond}
	}
	return o, nil
}

// Credential returns cred, or azidentity's default credential for tenant.
func Credential(cred azcore.TokenCredential, tenant string) (azcore.TokenCredential, error) {
	if cred != nil {
		return cred, nil
	}
	return azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{TenantID: tenant})
}

// Keystore is an Azure Key Vault upstream.
type Keystore struct {
	name string
	opts keystore.Options
	c    *azsecrets.Client
	now  func() time.Time

	warnOnce sync.Once
}

var _ keystore.Keystore = (*Keystore)(nil)

// New returns a Keystore for cfg (validated). It makes no request.
func New(cfg Config, opts keystore.Options) (*Keystore, error) {
	opts = opts.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: keystores.%s: %w", keystore.ErrConfig, opts.Name, err)
	}
	co, err := ClientOptions(cfg.CAFile, opts.BodyLimit(), cfg.MaxRetries)
	if err != nil {
		return nil, fmt.Errorf("%w: keystores.%s: %w", keystore.ErrConfig, opts.Name, err)
	}
	co.Transport = keystore.RateDoer(co.Transport, opts.Limiter)
	cred, err := Credential(cfg.Credential, cfg.TenantID)
	if err != nil {
		return nil, fmt.Errorf("%w: keystores.%s: credential: %w", keystore.ErrConfig, opts.Name, err)
	}
	c, err := azsecrets.NewClient(strings.TrimSuffix(cfg.VaultURL, "/"), cred, &azsecrets.ClientOptions{
		ClientOptions: co, DisableChallengeResourceVerification: cfg.DisableChallengeResourceVerification,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: keystores.%s: %w", keystore.ErrConfig, opts.Name, err)
	}
	return &Keystore{name: opts.Name, opts: opts, c: c, now: time.Now}, nil
}

var namePattern = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)

// ValidateItem implements keystore.Keystore: a Key Vault secret name.
func (k *Keystore) ValidateItem(item string) error {
	if !namePattern.MatchString(item) {
		return fmt.Errorf("%w: Key Vault secret name %q: 1-127 letters, digits and '-'", keystore.ErrInvalidRef, item)
	}
	return nil
}

// stamp is the version of an item updated at u: its epoch second once
// settled; while it may not be, also the version id ("u1700000000~3f2a..."),
// which only a read of the item gives.
func (k *Keystore) stamp(u *time.Time, id string) string {
	if u == nil {
		return "u?" + id
	}
	s := "u" + strconv.FormatInt(u.Unix(), 10)
	if k.unsettled(u) {
		s += "~" + id
	}
	return s
}

func (k *Keystore) unsettled(u *time.Time) bool { return u == nil || k.now().Sub(*u) < settle }

// Read implements keystore.Keystore.
func (k *Keystore) Read(ctx context.Context, item string) (keystore.Item, error) {
	if err := k.ValidateItem(item); err != nil {
		return keystore.Item{}, &keystore.Error{Upstream: k.name, Item: item, Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, k.opts.Timeout)
	defer cancel()
	r, err := k.c.GetSecret(ctx, item, "", nil)
	if err != nil {
		return keystore.Item{}, k.apiError(ctx, item, err)
	}
	if r.Attributes != nil && r.Attributes.Enabled != nil && !*r.Attributes.Enabled {
		return keystore.Item{}, keystore.Errorf(k.name, item, keystore.ErrDisabled, "the secret is disabled")
	}
	if r.Value == nil {
		return keystore.Item{}, keystore.Errorf(k.name, item, keystore.ErrNotFound, "the secret has no value")
	}
	if len(*r.Value) > k.opts.MaxValueSize {
		return keystore.Item{}, keystore.Errorf(k.name, item, keystore.ErrTooLarge, "%d bytes, more than max_value_size %d", len(*r.Value), k.opts.MaxValueSize)
	}
	var updated *time.Time
	if r.Attributes != nil {
		updated = r.Attributes.Updated
	}
	id := ""
	if r.ID != nil {
		id = r.ID.Version()
	}
	return keystore.Item{Version: k.stamp(updated, id), Value: secret.Value([]byte(*r.Value))}, nil
}

// Check implements keystore.Keystore.
func (k *Keystore) Check(ctx context.Context, items []string) (map[string]keystore.State, error) {
	out := make(map[string]keystore.State, len(items))
	if len(items) == 0 {
		return out, nil
	}
	listed, err := k.list(ctx)
	var re *azcore.ResponseError
	switch {
	case errors.As(err, &re) && re.StatusCode == http.StatusForbidden:
		k.warnOnce.Do(func() {
			k.opts.Logger.Warn("azure: listing secrets is not allowed; checking each item with a read (grant list to check without reading values)")
		})
		listed = nil
	case err != nil:
		return nil, k.apiError(ctx, "", err)
	}
	for _, item := range items {
		p, ok := listed[strings.ToLower(item)]
		switch {
		case ok && p.Attributes != nil && p.Attributes.Enabled != nil && !*p.Attributes.Enabled:
			out[item] = keystore.State{Err: keystore.Errorf(k.name, item, keystore.ErrDisabled, "the secret is disabled")}
			continue
		case ok && !k.unsettled(updatedOf(p)):
			out[item] = keystore.State{Version: k.stamp(updatedOf(p), "")}
			continue
		}
		// Changed in the last seconds, not listed, or no list permission:
		// a read gives the version id.
		it, err := k.Read(ctx, item)
		if err != nil {
			if errors.Is(err, keystore.ErrUnreachable) {
				var ke *keystore.Error
				errors.As(err, &ke)
				return nil, &keystore.Error{Upstream: k.name, Err: ke.Err}
			}
			out[item] = keystore.State{Err: err}
			continue
		}
		it.Value.Zero()
		out[item] = keystore.State{Version: it.Version}
	}
	return out, nil
}

func updatedOf(p *azsecrets.SecretProperties) *time.Time {
	if p.Attributes == nil {
		return nil
	}
	return p.Attributes.Updated
}

// list returns every secret's properties by lower-case name (Key Vault
// names are case-insensitive).
func (k *Keystore) list(ctx context.Context) (map[string]*azsecrets.SecretProperties, error) {
	out := map[string]*azsecrets.SecretProperties{}
	p := k.c.NewListSecretPropertiesPager(nil)
	for p.More() {
		page, err := k.nextPage(ctx, p)
		if err != nil {
			return nil, err
		}
		for _, s := range page.Value {
			if s != nil && s.ID != nil {
				out[strings.ToLower(s.ID.Name())] = s
			}
		}
	}
	return out, nil
}

func (k *Keystore) nextPage(ctx context.Context, p interface {
	NextPage(context.Context) (azsecrets.ListSecretPropertiesResponse, error)
}) (azsecrets.ListSecretPropertiesResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, k.opts.Timeout)
	defer cancel()
	return p.NextPage(ctx)
}

// apiError classifies an SDK error.
func (k *Keystore) apiError(ctx context.Context, item string, err error) error {
	var (
		re  *azcore.ResponseError
		afe *azidentity.AuthenticationFailedError
	)
	switch {
	case errors.As(err, &re):
		inner := innerCode(re)
		kind := keystore.ErrUnreachable
		switch {
		case re.StatusCode == http.StatusNotFound:
			kind = keystore.ErrNotFound
		case re.StatusCode == http.StatusForbidden && (inner == "SecretDisabled" || re.ErrorCode == "SecretDisabled"):
			kind = keystore.ErrDisabled
		case re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized:
			kind = keystore.ErrAccessLost
		}
		return keystore.Errorf(k.name, item, kind, "HTTP %d %s", re.StatusCode, keystore.Detail(strings.TrimSpace(re.ErrorCode+" "+inner)))
	case errors.As(err, &afe):
		kind := keystore.ErrUnreachable
		if afe.RawResponse != nil && afe.RawResponse.StatusCode >= 400 && afe.RawResponse.StatusCode < 500 {
			kind = keystore.ErrAccessLost // Entra ID refused Coffer's identity
		}
		return keystore.Errorf(k.name, item, kind, "getting a token: %s", keystore.Detail(firstLine(afe.Error())))
	case errors.Is(err, keystore.ErrTooLarge):
		return keystore.Errorf(k.name, item, keystore.ErrTooLarge, "the response is larger than %d bytes", k.opts.BodyLimit())
	case keystore.IsContextError(ctx, err):
		return keystore.Errorf(k.name, item, keystore.ErrUnreachable, "%w", ctx.Err())
	}
	return keystore.Errorf(k.name, item, keystore.TransportError(err), "%s", keystore.Detail(firstLine(err.Error())))
}

// innerCode is error.innererror.code of a Key Vault error body, if any.
func innerCode(re *azcore.ResponseError) string {
	if re.RawResponse == nil || re.RawResponse.Body == nil {
		return ""
	}
	b, err := io.ReadAll(io.LimitReader(re.RawResponse.Body, 64<<10))
	if err != nil {
		return ""
	}
	m := regexp.MustCompile(`"innererror"\s*:\s*\{\s*"code"\s*:\s*"([A-Za-z]+)"`).FindSubmatch(b)
	if m == nil {
		return ""
	}
	return string(m[1])
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// Close implements keystore.Keystore.
func (k *Keystore) Close() error { return nil }
