// Package conjur links Coffer secrets to CyberArk Conjur variables, through
// the official client (github.com/cyberark/conjur-api-go), authenticating
// as a host with its API key.
//
// An item is a variable id ("prod/db/password"); its value is the
// variable's latest secret, and the version is Conjur's secret version
// number. Check lists the variables visible to Coffer's host
// (GET /resources/{account}?kind=variable, 1000 per page), whose entries
// carry their secrets' versions: ceil(visible variables / 1000) calls per
// check, reading no value. A variable missing from the listing is confirmed
// with GET /resources/{account}/variable/{id} before it is reported gone.
package conjur

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/cyberark/conjur-api-go/conjurapi"
	"github.com/cyberark/conjur-api-go/conjurapi/authn"
	"github.com/cyberark/conjur-api-go/conjurapi/response"

	"coffer/internal/keystore"
	"coffer/internal/secret"
)

// Type is the `type:` value that selects this upstream.
const Type = "conjur"

// DefaultPollInterval: one paged resource listing every 10 s.
const DefaultPollInterval = 10 * time.Second

// pageSize is the limit of one resource listing page (Conjur's default
// maximum).
const pageSize = 1000

// Builtin describes the implementation for the builtins list.
func Builtin() keystore.Builtin {
	return keystore.Builtin{
		Type:                Type,
		DefaultPollInterval: DefaultPollInterval,
		NewConfig:           func() keystore.UpstreamConfig { return &Config{} },
	}
}

// Config is a Conjur upstream's own configuration keys.
type Config struct {
	URL        string `yaml:"url"`          // https://conjur.example
	Account    string `yaml:"account"`      // Conjur organisation account
	HostID     string `yaml:"host_id"`      // Coffer's host identity, e.g. coffer or host/coffer
	APIKeyFile string `yaml:"api_key_file"` // file holding the host's API key
	CAFile     string `yaml:"ca_file"`      // PEM of Conjur's CA; default: the system pool
}

// Validate implements keystore.UpstreamConfig.
func (c *Config) Validate() error {
	u, err := url.Parse(c.URL)
	if c.URL == "" || err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" {
		return fmt.Errorf("url %q: want https://conjur.example", c.URL)
	}
	switch {
	case c.Account == "" || strings.ContainsAny(c.Account, ":/ "):
		return fmt.Errorf("account %q: want the Conjur account name", c.Account)
	case strings.TrimPrefix(c.HostID, "host/") == "":
		return fmt.Errorf("host_id is missing (Coffer's Conjur host, e.g. host/coffer)")
	case c.APIKeyFile == "":
		return fmt.Errorf("api_key_file is missing")
	}
	return nil
}

// Open implements keystore.UpstreamConfig.
func (c *Config) Open(opts keystore.Options) (keystore.Keystore, error) { return New(*c, opts) }

// Keystore is a Conjur upstream.
type Keystore struct {
	name    string
	opts    keystore.Options
	account string

	// mu serialises the client's requests: it refreshes its access token
	// inside SubmitRequest without a lock of its own.
	mu sync.Mutex
	c  *conjurapi.Client

	pageSize int
}

var _ keystore.Keystore = (*Keystore)(nil)

// New returns a Keystore for cfg (validated). It reads the API key file but
// does not log in until first used.
func New(cfg Config, opts keystore.Options) (*Keystore, error) {
	opts = opts.WithDefaults()
	bad := func(err error) error { return fmt.Errorf("%w: keystores.%s: %w", keystore.ErrConfig, opts.Name, err) }
	if err := cfg.Validate(); err != nil {
		return nil, bad(err)
	}
	key, err := keystore.ReadSecretFile("api_key_file", cfg.APIKeyFile)
	if err != nil {
		return nil, bad(err)
	}
	login := cfg.HostID
	if !strings.HasPrefix(login, "host/") {
		login = "host/" + login
	}
	c, err := conjurapi.NewClientFromKey(conjurapi.Config{
		Account:           cfg.Account,
		ApplianceURL:      strings.TrimSuffix(cfg.URL, "/"),
		SSLCertPath:       cfg.CAFile,
		CredentialStorage: "none",
		HTTPTimeout:       max(1, int(opts.Timeout/time.Second)),
	}, authn.LoginPair{Login: login, APIKey: string(key)})
	clear(key)
	if err != nil {
		return nil, bad(err)
	}
	hc := c.GetHttpClient()
	hc.Transport = keystore.LimitTransport(keystore.RateTransport(hc.Transport, opts.Limiter), opts.BodyLimit())
	return &Keystore{name: opts.Name, opts: opts, account: cfg.Account, c: c, pageSize: pageSize}, nil
}

// ValidateItem implements keystore.Keystore: a variable id.
func (k *Keystore) ValidateItem(item string) error {
	if item == "" || len(item) > 1024 {
		return fmt.Errorf("%w: Conjur variable id %q: want 1-1024 bytes, e.g. prod/db/password", keystore.ErrInvalidRef, item)
	}
	for _, r := range item {
		if r == '#' || r == '?' || r == ' ' || !unicode.IsPrint(r) {
			return fmt.Errorf("%w: Conjur variable id %q: no '#', '?', spaces or control characters", keystore.ErrInvalidRef, item)
		}
	}
	for _, seg := range strings.Split(item, "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("%w: Conjur variable id %q: no '.' or '..' segments", keystore.ErrInvalidRef, item)
		}
	}
	return nil
}

func (k *Keystore) fullID(item string) string { return k.account + ":variable:" + item }

// submit sends req with ctx and the client's access token. When Conjur
// answers 401 (the token was revoked, or Conjur's signing key changed) it
// logs in once more and retries once.
func (k *Keystore) submit(ctx context.Context, req *http.Request) (*http.Response, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	resp, err := k.c.SubmitRequest(req.WithContext(ctx))
	if err != nil || resp.StatusCode != http.StatusUnauthorized || req.Body != nil {
		return resp, err
	}
	resp.Body.Close()
	if err := k.c.ForceRefreshToken(); err != nil {
		return nil, err
	}
	return k.c.SubmitRequest(req.Clone(ctx))
}

// resource returns the current secret version of a variable.
func (k *Keystore) resource(ctx context.Context, item string) (int, error) {
	req, err := k.c.ResourceRequest(k.fullID(item))
	if err != nil {
		return 0, keystore.Errorf(k.name, item, keystore.ErrInvalidRef, "%s", keystore.Detail(err.Error()))
	}
	resp, err := k.submit(ctx, req)
	if err != nil {
		return 0, k.clientError(ctx, item, err)
	}
	data, err := readData(resp, k.opts.BodyLimit())
	if err != nil {
		return 0, k.clientError(ctx, item, err)
	}
	var r resourceJSON
	if err := json.Unmarshal(data, &r); err != nil {
		return 0, keystore.Errorf(k.name, item, keystore.ErrUnreachable, "the resource is not the JSON expected")
	}
	v := r.current()
	if v == 0 {
		return 0, keystore.Errorf(k.name, item, keystore.ErrNotFound, "the variable has no value yet")
	}
	return v, nil
}

type resourceJSON struct {
	ID      string `json:"id"`
	Secrets []struct {
		Version int `json:"version"`
	} `json:"secrets"`
}

func (r resourceJSON) current() int {
	v := 0
	for _, s := range r.Secrets {
		v = max(v, s.Version)
	}
	return v
}

// Read implements keystore.Keystore: the variable's resource gives the
// current version, which is then read by number, so that version and value
// always match.
func (k *Keystore) Read(ctx context.Context, item string) (keystore.Item, error) {
	if err := k.ValidateItem(item); err != nil {
		return keystore.Item{}, &keystore.Error{Upstream: k.name, Item: item, Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, k.opts.Timeout)
	defer cancel()
	ver, err := k.resource(ctx, item)
	if err != nil {
		return keystore.Item{}, err
	}
	req, err := k.c.RetrieveSecretWithVersionRequest(k.fullID(item), ver)
	if err != nil {
		return keystore.Item{}, keystore.Errorf(k.name, item, keystore.ErrInvalidRef, "%s", keystore.Detail(err.Error()))
	}
	resp, err := k.submit(ctx, req)
	if err != nil {
		return keystore.Item{}, k.clientError(ctx, item, err)
	}
	v, err := readData(resp, int64(k.opts.MaxValueSize))
	if err != nil {
		return keystore.Item{}, k.clientError(ctx, item, err)
	}
	return keystore.Item{Version: strconv.Itoa(ver), Value: secret.Value(v)}, nil
}

// readData returns the body of a 2xx response (at most max bytes), or the
// client's *response.ConjurError.
func readData(resp *http.Response, max int64) ([]byte, error) {
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return nil, response.NewConjurError(resp)
	}
	return keystore.ReadLimited(resp.Body, max)
}

// Check implements keystore.Keystore.
func (k *Keystore) Check(ctx context.Context, items []string) (map[string]keystore.State, error) {
	out := make(map[string]keystore.State, len(items))
	if len(items) == 0 {
		return out, nil
	}
	versions, err := k.list(ctx)
	if err != nil {
		return nil, k.clientError(ctx, "", err)
	}
	for _, item := range items {
		if err := k.ValidateItem(item); err != nil {
			out[item] = keystore.State{Err: &keystore.Error{Upstream: k.name, Item: item, Err: err}}
			continue
		}
		if v, ok := versions[k.fullID(item)]; ok && v > 0 {
			out[item] = keystore.State{Version: strconv.Itoa(v)}
			continue
		}
		v, err := k.confirm(ctx, item)
		if err != nil && errors.Is(err, keystore.ErrUnreachable) {
			var ke *keystore.Error
			errors.As(err, &ke)
			return nil, &keystore.Error{Upstream: k.name, Err: ke.Err}
		}
		if err != nil {
			out[item] = keystore.State{Err: err}
		} else {
			out[item] = keystore.State{Version: strconv.Itoa(v)}
		}
	}
	return out, nil
}

func (k *Keystore) confirm(ctx context.Context, item string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, k.opts.Timeout)
	defer cancel()
	return k.resource(ctx, item)
}

// list returns the current secret version of every visible variable, by
// full id.
func (k *Keystore) list(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	for offset := 0; ; offset += k.pageSize {
		page, err := k.listPage(ctx, offset)
		if err != nil {
			return nil, err
		}
		for _, r := range page {
			out[r.ID] = r.current()
		}
		if len(page) < k.pageSize {
			return out, nil
		}
	}
}

func (k *Keystore) listPage(ctx context.Context, offset int) ([]resourceJSON, error) {
	ctx, cancel := context.WithTimeout(ctx, k.opts.Timeout)
	defer cancel()
	req, err := k.c.ResourcesRequest(&conjurapi.ResourceFilter{Kind: "variable", Limit: k.pageSize, Offset: offset})
	if err != nil {
		return nil, err
	}
	resp, err := k.submit(ctx, req)
	if err != nil {
		return nil, err
	}
	data, err := readData(resp, k.opts.BodyLimit())
	if err != nil {
		return nil, err
	}
	var page []resourceJSON
	if err := json.Unmarshal(data, &page); err != nil {
		return nil, fmt.Errorf("the resource listing is not the JSON expected")
	}
	return page, nil
}

// clientError classifies an error of the Conjur client.
func (k *Keystore) clientError(ctx context.Context, item string, err error) error {
	var ce *response.ConjurError
	switch {
	case errors.As(err, &ce):
		kind := keystore.StatusError(ce.Code)
		msg := ce.Message
		if ce.Details != nil && ce.Details.Code != "" {
			msg = ce.Details.Code + ": " + ce.Details.Message
		}
		return keystore.Errorf(k.name, item, kind, "HTTP %d: %s", ce.Code, keystore.Detail(msg))
	case errors.Is(err, keystore.ErrTooLarge):
		return keystore.Errorf(k.name, item, keystore.ErrTooLarge, "more than max_value_size %d bytes", k.opts.MaxValueSize)
	case keystore.IsContextError(ctx, err):
		return keystore.Errorf(k.name, item, keystore.ErrUnreachable, "%w", ctx.Err())
	}
	return keystore.Errorf(k.name, item, keystore.TransportError(err), "%s", keystore.Detail(err.Error()))
}

// Close implements keystore.Keystore.
func (k *Keystore) Close() error { return nil }
