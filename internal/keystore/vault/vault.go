package vault

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"coffer/internal/keystore"
	"coffer/internal/secret"
)

// checkConcurrency bounds the metadata reads one Check runs at once
// (max_requests_per_second paces them too).
const checkConcurrency = 16

// Keystore is a Vault KV v2 upstream.
type Keystore struct {
	name  string
	opts  keystore.Options
	cfg   Config
	mount string
	c     *api.Client
	auth  *Auth
	hints *hintFeed // nil without change_hints
}

var (
	_ keystore.Keystore = (*Keystore)(nil)
	_ keystore.Hinter   = (*Keystore)(nil)
)

// New returns a Keystore for cfg (validated). It reads no credential and
// makes no request until first used.
func New(cfg Config, opts keystore.Options) (*Keystore, error) {
	opts = opts.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: keystores.%s: %w", keystore.ErrConfig, opts.Name, err)
	}
	c, err := NewClient(cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("%w: keystores.%s: %w", keystore.ErrConfig, opts.Name, err)
	}
	k := &Keystore{
		name: opts.Name, opts: opts, cfg: cfg, mount: cfg.KVMount, c: c,
		auth: NewAuth(cfg, c, opts.Logger),
	}
	if cfg.ChangeHints != nil {
		if k.hints, err = startHints(cfg.ChangeHints.Listen, cfg.KVMount, opts.Logger); err != nil {
			k.auth.Close()
			return nil, fmt.Errorf("%w: keystores.%s: %w", keystore.ErrConfig, opts.Name, err)
		}
	}
	return k, nil
}

// Hints implements keystore.Hinter: items named by KV writes that Vault's
// socket audit device reported (nil without change_hints).
func (k *Keystore) Hints() <-chan []string {
	if k.hints == nil {
		return nil
	}
	return k.hints.ch
}

// NewClient returns an official Vault client for cfg's address and TLS
// settings that ignores the VAULT_* environment (a server's keystore
// settings come from its configuration only). It has no token.
func NewClient(cfg Config, opts keystore.Options) (*api.Client, error) {
	opts = opts.WithDefaults()
	pool, err := keystore.CertPool(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: cfg.TLSServerName}
	if cfg.Cert != nil {
		cert, err := tls.LoadX509KeyPair(cfg.Cert.CertFile, cfg.Cert.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cert: %w", err)
		}
		tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	tr.Proxy = nil // the environment's proxy settings do not apply either
	retries := 2
	if cfg.MaxRetries != 0 {
		retries = max(cfg.MaxRetries, 0) // -1: none
	}
	c, err := api.NewClient(&api.Config{
		Address: strings.TrimSuffix(cfg.Address, "/"),
		HttpClient: &http.Client{
			Transport:     keystore.LimitTransport(keystore.RateTransport(tr, opts.Limiter), opts.BodyLimit()),
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		Timeout:      opts.Timeout,
		MaxRetries:   retries,
		MinRetryWait: 500 * time.Millisecond,
		MaxRetryWait: 1500 * time.Millisecond,
	})
	if err != nil {
		return nil, err
	}
	c.ClearToken()
	c.SetHeaders(http.Header{api.RequestHeaderName: []string{"true"}})
	if cfg.Namespace != "" {
		c.SetNamespace(cfg.Namespace)
	}
	return c, nil
}

// ValidateItem implements keystore.Keystore: a path under the KV mount.
func (k *Keystore) ValidateItem(item string) error {
	if item == "" || strings.HasPrefix(item, "/") || strings.HasSuffix(item, "/") {
		return fmt.Errorf("%w: vault item %q: want a path under the KV mount such as payments/db (no leading or trailing '/')",
			keystore.ErrInvalidRef, item)
	}
	return validatePath("vault item", item)
}

// dataResponse is GET <mount>/data/<path>.
type dataResponse struct {
	Data *struct {
		Data     map[string]json.RawMessage `json:"data"`
		Metadata struct {
			Version int `json:"version"`
		} `json:"metadata"`
	} `json:"data"`
}

// Read implements keystore.Keystore.
func (k *Keystore) Read(ctx context.Context, item string) (keystore.Item, error) {
	if err := k.ValidateItem(item); err != nil {
		return keystore.Item{}, &keystore.Error{Upstream: k.name, Item: item, Err: err}
	}
	body, err := k.get(ctx, item, k.mount+"/data/"+item)
	if err != nil {
		return keystore.Item{}, err
	}
	defer clear(body)
	var r dataResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return keystore.Item{}, keystore.Errorf(k.name, item, keystore.ErrUnreachable, "Vault's answer is not the KV v2 JSON expected")
	}
	if r.Data == nil || r.Data.Data == nil {
		return keystore.Item{}, keystore.Errorf(k.name, item, keystore.ErrNotFound, "the current version was deleted")
	}
	defer func() {
		for _, v := range r.Data.Data {
			clear(v)
		}
	}()
	v, err := keystore.CanonicalObject(r.Data.Data)
	if err != nil {
		return keystore.Item{}, keystore.Errorf(k.name, item, keystore.ErrUnreachable, "%s", err.Error())
	}
	if len(v) > k.opts.MaxValueSize {
		clear(v)
		return keystore.Item{}, keystore.Errorf(k.name, item, keystore.ErrTooLarge,
			"the item is %d bytes as JSON, more than max_value_size %d", len(v), k.opts.MaxValueSize)
	}
	return keystore.Item{Version: strconv.Itoa(r.Data.Metadata.Version), Value: secret.Value(v)}, nil
}

// metadataResponse is GET <mount>/metadata/<path>.
type metadataResponse struct {
	Data *struct {
		CurrentVersion int `json:"current_version"`
		Versions       map[string]struct {
			DeletionTime string `json:"deletion_time"`
			Destroyed    bool   `json:"destroyed"`
		} `json:"versions"`
	} `json:"data"`
}

// Check implements keystore.Keystore: one metadata read per item, at most
// checkConcurrency at once. A failure to reach Vault at all ends the Check
// early with one error for every item.
func (k *Keystore) Check(ctx context.Context, items []string) (map[string]keystore.State, error) {
	out := make(map[string]keystore.State, len(items))
	if len(items) == 0 {
		return out, nil
	}
	if _, err := k.auth.Token(ctx); err != nil {
		return nil, k.authError("", err)
	}
	return keystore.CheckEach(ctx, k.name, items, checkConcurrency, func(ctx context.Context, item string) (keystore.State, error) {
		st, transport := k.checkOne(ctx, item)
		if transport {
			return st, &keystore.Error{Upstream: k.name, Err: errors.Unwrap(st.Err)}
		}
		return st, nil
	})
}

// checkOne returns one item's state, and whether its error was Vault not
// answering at all.
func (k *Keystore) checkOne(ctx context.Context, item string) (keystore.State, bool) {
	if err := k.ValidateItem(item); err != nil {
		return keystore.State{Err: &keystore.Error{Upstream: k.name, Item: item, Err: err}}, false
	}
	body, err := k.get(ctx, item, k.mount+"/metadata/"+item)
	if err != nil {
		var re *api.ResponseError
		return keystore.State{Err: err}, errors.Is(err, keystore.ErrUnreachable) && !errors.As(err, &re)
	}
	var r metadataResponse
	err = json.Unmarshal(body, &r)
	if err != nil || r.Data == nil {
		return keystore.State{Err: keystore.Errorf(k.name, item, keystore.ErrUnreachable, "Vault's answer is not the KV v2 metadata expected")}, false
	}
	cur := r.Data.Versions[strconv.Itoa(r.Data.CurrentVersion)]
	switch {
	case r.Data.CurrentVersion == 0:
		return keystore.State{Err: keystore.Errorf(k.name, item, keystore.ErrNotFound, "no version")}, false
	case cur.Destroyed:
		return keystore.State{Err: keystore.Errorf(k.name, item, keystore.ErrNotFound, "current version %d was destroyed", r.Data.CurrentVersion)}, false
	case deleted(cur.DeletionTime):
		return keystore.State{Err: keystore.Errorf(k.name, item, keystore.ErrNotFound, "current version %d was deleted", r.Data.CurrentVersion)}, false
	}
	return keystore.State{Version: strconv.Itoa(r.Data.CurrentVersion)}, false
}

// deleted reports whether a KV deletion_time has passed (it may lie in the
// future with delete_version_after).
func deleted(ts string) bool {
	if ts == "" {
		return false
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	return err != nil || !t.After(time.Now())
}

// get reads path with the current token and returns the body. When Vault
// answers 403 it authenticates once more (a rotated token file, an expired
// AppRole or cert login) and retries once.
func (k *Keystore) get(ctx context.Context, item, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, k.opts.Timeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		tok, err := k.auth.Token(ctx)
		if err != nil {
			return nil, k.authError(item, err)
		}
		body, err := k.rawGet(ctx, tok, path)
		var re *api.ResponseError
		if attempt == 0 && errors.As(err, &re) && re.StatusCode == http.StatusForbidden && k.auth.Reauth(ctx, tok) {
			continue
		}
		if err != nil {
			return nil, k.requestError(ctx, item, err)
		}
		return body, nil
	}
}

func (k *Keystore) rawGet(ctx context.Context, token, path string) ([]byte, error) {
	resp, err := k.auth.Client(token).Logical().ReadRawWithContext(ctx, path)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		return nil, err
	}
	defer resp.Body.Close()
	return keystore.ReadLimited(resp.Body, k.opts.BodyLimit())
}

// requestError classifies an error of a request to Vault.
func (k *Keystore) requestError(ctx context.Context, item string, err error) error {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		if keystore.IsContextError(ctx, err) {
			return keystore.Errorf(k.name, item, keystore.ErrUnreachable, "%w", ctx.Err())
		}
		return keystore.Errorf(k.name, item, keystore.TransportError(err), "%s", keystore.Detail(err.Error()))
	}
	msg := keystore.Detail(strings.Join(re.Errors, "; "))
	switch {
	case re.StatusCode == http.StatusNotFound && strings.Contains(msg, "no handler for route"):
		// The mount is missing, not the item: never a reason to revoke.
		return keystore.Errorf(k.name, item, keystore.ErrUnreachable, "kv_mount %q is not mounted in Vault: %s", k.mount, msg)
	case re.StatusCode == http.StatusNotFound:
		return keystore.Errorf(k.name, item, keystore.ErrNotFound, "no such secret (or its current version was deleted)")
	case re.StatusCode == http.StatusForbidden:
		return keystore.Errorf(k.name, item, keystore.ErrAccessLost, "Vault denied access (HTTP 403: %s)", msg)
	}
	return keystore.Errorf(k.name, item, keystore.ErrUnreachable, "HTTP %d: %s", re.StatusCode, msg)
}

// authError classifies a failure to obtain a token.
func (k *Keystore) authError(item string, err error) error {
	var re *api.ResponseError
	switch {
	case errors.Is(err, errNoToken):
		return keystore.Errorf(k.name, item, keystore.ErrAccessLost, "%s", keystore.Detail(err.Error()))
	case errors.As(err, &re) && (re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusBadRequest ||
		re.StatusCode == http.StatusUnauthorized):
		return keystore.Errorf(k.name, item, keystore.ErrAccessLost, "login refused (HTTP %d: %s)", re.StatusCode,
			keystore.Detail(strings.Join(re.Errors, "; ")))
	case errors.As(err, &re):
		return keystore.Errorf(k.name, item, keystore.ErrUnreachable, "login: HTTP %d: %s", re.StatusCode,
			keystore.Detail(strings.Join(re.Errors, "; ")))
	}
	return keystore.Errorf(k.name, item, keystore.TransportError(err), "login: %s", keystore.Detail(err.Error()))
}

// Close implements keystore.Keystore.
func (k *Keystore) Close() error {
	if k.hints != nil {
		k.hints.close()
	}
	k.auth.Close()
	k.c.ClearToken()
	return nil
}
