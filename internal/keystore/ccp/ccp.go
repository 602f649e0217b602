// Package ccp links Coffer secrets to accounts of the CyberArk Central
// Credential Provider (the Enterprise Password Vault's REST front, GET
// /AIMWebService/api/Accounts), with plain net/http: CyberArk ships no
// official Go client. Coffer authenticates as an application (AppID) with
// a client certificate (mutual TLS).
//
// An item is Safe/Object; its value is the account's Content (the
// password). CCP has no metadata or listing call, so Check fetches every
// item and compares a keyed hash of its content (HMAC-SHA-256 under
// Options.HashKey, so the version reveals nothing of the value): one call
// per linked item per check.
package ccp

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"coffer/internal/keystore"
	"coffer/internal/secret"
)

// Type is the `type:` value that selects this upstream.
const Type = "cyberark-ccp"

// DefaultPollInterval: a full read per linked item every 10 s.
const DefaultPollInterval = 10 * time.Second

// checkConcurrency bounds the reads one Check runs at once.
const checkConcurrency = 8

// Builtin describes the implementation for the builtins list.
func Builtin() keystore.Builtin {
	return keystore.Builtin{
		Type:                Type,
		DefaultPollInterval: DefaultPollInterval,
		NewConfig:           func() keystore.UpstreamConfig { return &Config{} },
	}
}

// Config is a CCP upstream's own configuration keys.
type Config struct {
	URL      string `yaml:"url"`       // https://ccp.example (the AIMWebService host)
	AppID    string `yaml:"app_id"`    // Coffer's application id in CyberArk
	CertFile string `yaml:"cert_file"` // client certificate (PEM), re-read on every TLS handshake
	KeyFile  string `yaml:"key_file"`  // its private key (PEM)
	CAFile   string `yaml:"ca_file"`   // PEM of the CCP's CA; default: the system pool
	Folder   string `yaml:"folder"`    // optional Folder query parameter (CCP's default is Root)
}

// Validate implements keystore.UpstreamConfig.
func (c *Config) Validate() error {
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "" || err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "":
		return fmt.Errorf("url %q: want https://ccp.example", c.URL)
	case c.AppID == "" || strings.ContainsAny(c.AppID, "&=?#/ "):
		return fmt.Errorf("app_id %q: want Coffer's CyberArk application id", c.AppID)
	case c.CertFile == "" || c.KeyFile == "":
		return fmt.Errorf("cert_file and key_file are required (CCP authenticates Coffer by its client certificate)")
	}
	return nil
}

// Open implements keystore.UpstreamConfig.
func (c *Config) Open(opts keystore.Options) (keystore.Keystore, error) { return New(*c, opts) }

// Keystore is a CCP upstream.
type Keystore struct {
	name    string
	opts    keystore.Options
	cfg     Config
	base    string
	hc      *http.Client
	hashKey []byte
}

var _ keystore.Keystore = (*Keystore)(nil)

// New returns a Keystore for cfg (validated). It checks that the client
// certificate loads, and makes no request.
func New(cfg Config, opts keystore.Options) (*Keystore, error) {
	opts = opts.WithDefaults()
	bad := func(err error) error { return fmt.Errorf("%w: keystores.%s: %w", keystore.ErrConfig, opts.Name, err) }
	if err := cfg.Validate(); err != nil {
		return nil, bad(err)
	}
	if _, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile); err != nil {
		return nil, bad(fmt.Errorf("cert_file/key_file: %w", err))
	}
	pool, err := keystore.CertPool(cfg.CAFile)
	if err != nil {
		return nil, bad(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.TLSClientConfig = &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile) // picks up a renewed certificate
			return &c, err
		},
	}
	key := opts.HashKey
	if key == nil {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
	}
	return &Keystore{
		name: opts.Name, opts: opts, cfg: cfg, base: strings.TrimSuffix(cfg.URL, "/"),
		hc:      &http.Client{Transport: keystore.LimitTransport(keystore.RateTransport(tr, opts.Limiter), opts.BodyLimit())},
		hashKey: append([]byte(nil), key...),
	}, nil
}

// ValidateItem implements keystore.Keystore: Safe/Object.
func (k *Keystore) ValidateItem(item string) error {
	safe, object, ok := strings.Cut(item, "/")
	switch {
	case !ok || safe == "" || object == "":
		return fmt.Errorf("%w: CCP item %q: want Safe/Object", keystore.ErrInvalidRef, item)
	case len(safe) > 28 || strings.ContainsAny(safe, `\:*?"<>|`):
		return fmt.Errorf("%w: CCP safe %q: at most 28 characters, none of \\:*?\"<>|", keystore.ErrInvalidRef, safe)
	case len(object) > 256:
		return fmt.Errorf("%w: CCP object name is longer than 256 bytes", keystore.ErrInvalidRef)
	}
	for _, r := range item {
		if r == '#' || r == ' ' || !unicode.IsPrint(r) {
			return fmt.Errorf("%w: CCP item %q: no '#', spaces or control characters", keystore.ErrInvalidRef, item)
		}
	}
	return nil
}

// Read implements keystore.Keystore.
func (k *Keystore) Read(ctx context.Context, item string) (keystore.Item, error) {
	v, _, err := k.fetch(ctx, item)
	if err != nil {
		return keystore.Item{}, err
	}
	return keystore.Item{Version: k.version(v), Value: v}, nil
}

// version is a keyed hash of the content: equal contents, equal versions;
// nothing learned about the content without the key.
func (k *Keystore) version(v []byte) string {
	m := hmac.New(sha256.New, k.hashKey)
	m.Write(v)
	return "h" + hex.EncodeToString(m.Sum(nil)[:16])
}

// fetch gets an account's Content; answered says whether the CCP gave an
// HTTP answer (on failure too).
func (k *Keystore) fetch(ctx context.Context, item string) (v secret.Value, answered bool, err error) {
	if err := k.ValidateItem(item); err != nil {
		return nil, false, &keystore.Error{Upstream: k.name, Item: item, Err: err}
	}
	safe, object, _ := strings.Cut(item, "/")
	q := url.Values{"AppID": {k.cfg.AppID}, "Safe": {safe}, "Object": {object}}
	if k.cfg.Folder != "" {
		q.Set("Folder", k.cfg.Folder)
	}
	ctx, cancel := context.WithTimeout(ctx, k.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.base+"/AIMWebService/api/Accounts?"+q.Encode(), nil)
	if err != nil {
		return nil, false, keystore.Errorf(k.name, item, keystore.ErrUnreachable, "%s", keystore.Detail(err.Error()))
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.hc.Do(req)
	if err != nil {
		if keystore.IsContextError(ctx, err) {
			return nil, false, keystore.Errorf(k.name, item, keystore.ErrUnreachable, "%w", ctx.Err())
		}
		return nil, false, keystore.Errorf(k.name, item, keystore.TransportError(err), "%s", keystore.Detail(err.Error()))
	}
	defer resp.Body.Close()
	body, err := keystore.ReadLimited(resp.Body, k.opts.BodyLimit())
	if err != nil {
		return nil, true, keystore.Errorf(k.name, item, keystore.TransportError(err), "%s", keystore.Detail(err.Error()))
	}
	defer clear(body)
	if resp.StatusCode != http.StatusOK {
		return nil, true, k.ccpError(item, resp.StatusCode, body)
	}
	v, err = keystore.Pick(body, "Content")
	if err != nil {
		return nil, true, keystore.Errorf(k.name, item, keystore.ErrUnreachable, "the answer has no Content")
	}
	if len(v) > k.opts.MaxValueSize {
		v.Zero()
		return nil, true, keystore.Errorf(k.name, item, keystore.ErrTooLarge, "%d bytes, more than max_value_size %d", len(v), k.opts.MaxValueSize)
	}
	return v, true, nil
}

// ccpError classifies a CCP error answer {"ErrorCode","ErrorMsg"}.
func (k *Keystore) ccpError(item string, status int, body []byte) error {
	var e struct{ ErrorCode, ErrorMsg string }
	_ = json.Unmarshal(body, &e)
	kind := keystore.StatusError(status)
	switch e.ErrorCode {
	case "APPAP004E": // no password object matches the query
		kind = keystore.ErrNotFound
	case "APPAP306E", "APPAP008E", "APPAP010E", "APPAP308E": // application or machine not authorised
		kind = keystore.ErrAccessLost
	case "APPAP282E", "AIMWS030E", "AIMWS031E": // password change in progress; bad parameters
		kind = keystore.ErrUnreachable
	}
	return keystore.Errorf(k.name, item, kind, "HTTP %d %s: %s", status, keystore.Detail(e.ErrorCode), keystore.Detail(e.ErrorMsg))
}

// Check implements keystore.Keystore: a full read of every item, at most
// checkConcurrency at once. Failing to reach the CCP at all ends the Check
// early with one error.
func (k *Keystore) Check(ctx context.Context, items []string) (map[string]keystore.State, error) {
	return keystore.CheckEach(ctx, k.name, items, checkConcurrency, func(ctx context.Context, item string) (keystore.State, error) {
		v, answered, err := k.fetch(ctx, item)
		if err != nil {
			var ke *keystore.Error
			if !answered && errors.Is(err, keystore.ErrUnreachable) && errors.As(err, &ke) {
				return keystore.State{}, &keystore.Error{Upstream: k.name, Err: ke.Err}
			}
			return keystore.State{Err: err}, nil
		}
		st := keystore.State{Version: k.version(v)}
		v.Zero()
		return st, nil
	})
}

// Close implements keystore.Keystore.
func (k *Keystore) Close() error {
	k.hc.CloseIdleConnections()
	clear(k.hashKey)
	return nil
}
