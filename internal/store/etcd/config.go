package etcd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"time"

	"coffer/internal/privfile"
)

// Defaults and bounds of Config.
const (
	DefaultPrefix          = "coffer"
	DefaultDialTimeout     = 5 * time.Second
	DefaultRequestTimeout  = 10 * time.Second
	DefaultMaxTxnOps       = 128         // etcd's --max-txn-ops default
	DefaultMaxRequestBytes = 1536 * 1024 // etcd's --max-request-bytes default (1.5 MiB)
	DefaultMaxRetries      = 16
)

// Config says how to reach etcd and where Coffer's keys live in it.
type Config struct {
	// Endpoints are the client URLs of the etcd members, e.g.
	// "https://10.0.0.1:2379". Plain http is refused for every host but
	// the loopback one.
	Endpoints []string `yaml:"endpoints"`
	// Prefix names this Coffer installation inside etcd (default
	// "coffer"): letters, digits, '.', '_' and '-', at most 64. Every key
	// is stored under "<prefix>/", so installations with different
	// prefixes share an etcd cluster without seeing each other's keys.
	Prefix string `yaml:"prefix"`
	// CAFile is the PEM bundle that signs the etcd servers' certificates
	// (default: the system roots, when the endpoints are https).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are Coffer's client certificate and key, for
	// etcd members run with --client-cert-auth. The key file must be
	// private to its owner (mode 0600 or 0400).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in the servers' certificates
	// (default: the endpoint's host).
	ServerName string `yaml:"server_name"`
	// DialTimeout bounds Open's first contact with the cluster (default 5s).
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// RequestTimeout bounds every request to etcd (default 10s), on top of
	// the caller's context.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// MaxTxnOps must equal the servers' --max-txn-ops (default 128): an
	// Update that writes more keys, or reads more, is refused with
	// ErrTooManyOps before anything is sent.
	MaxTxnOps int `yaml:"max_txn_ops"`
	// MaxRequestBytes must equal the servers' --max-request-bytes (default
	// 1.5 MiB): an Update whose writes are larger is refused with
	// ErrTooLarge before anything is sent.
	MaxRequestBytes int `yaml:"max_request_bytes"`
	// MaxRetries bounds how often an Update is run again after a
	// concurrent write conflicted with it (default 16); then it fails with
	// ErrConflict.
	MaxRetries int `yaml:"max_retries"`

	// Logger receives the etcd client's warnings (default: discarded).
	Logger *slog.Logger `yaml:"-"`
}

// ErrConfig is returned (wrapped) by Open for a configuration it refuses;
// the message names the field.
var ErrConfig = errors.New("bad etcd store configuration")

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// withDefaults returns c with its zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.MaxTxnOps == 0 {
		c.MaxTxnOps = DefaultMaxTxnOps
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
}

// validate checks c (with defaults applied) and reports whether the
// endpoints use TLS.
func (c Config) validate() (secure bool, err error) {
	if len(c.Endpoints) == 0 {
		return false, configErr("endpoints is empty: give the client URL of at least one etcd member")
	}
	if !prefixRE.MatchString(c.Prefix) {
		return false, configErr("prefix %q: use 1 to 64 letters, digits, '.', '_' or '-'", c.Prefix)
	}
	var schemes = map[string]bool{}
	for i, ep := range c.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return false, configErr("endpoints[%d] %q: want http(s)://host:port", i, ep)
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil || host == "" {
			return false, configErr("endpoints[%d] %q: want http(s)://host:port", i, ep)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return false, configErr("endpoints[%d] %q: bad port", i, ep)
		}
		if u.Scheme == "http" && !isLoopback(host) {
			return false, configErr("endpoints[%d] %q: plain http to a host other than loopback would send Coffer's metadata "+
				"(bindings, token records) unencrypted and unauthenticated; use https and set ca_file, cert_file and key_file", i, ep)
		}
		schemes[u.Scheme] = true
	}
	if len(schemes) > 1 {
		return false, configErr("endpoints mix http and https; use https for all")
	}
	secure = schemes["https"]
	tlsSet := c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" || c.ServerName != ""
	switch {
	case tlsSet && !secure:
		return false, configErr("ca_file, cert_file, key_file or server_name is set but the endpoints are http; use https:// endpoints")
	case (c.CertFile == "") != (c.KeyFile == ""):
		return false, configErr("cert_file and key_file go together: set both or neither")
	case c.DialTimeout < 0 || c.DialTimeout > 5*time.Minute:
		return false, configErr("dial_timeout %s: must be 0 (default %s) to 5m", c.DialTimeout, DefaultDialTimeout)
	case c.RequestTimeout < 0 || c.RequestTimeout > 10*time.Minute:
		return false, configErr("request_timeout %s: must be 0 (default %s) to 10m", c.RequestTimeout, DefaultRequestTimeout)
	case c.MaxTxnOps < 3:
		return false, configErr("max_txn_ops %d: must be at least 3 (etcd's default is %d)", c.MaxTxnOps, DefaultMaxTxnOps)
	case c.MaxRequestBytes < 64<<10 || c.MaxRequestBytes > 1<<30:
		return false, configErr("max_request_bytes %d: must be 64 KiB to 1 GiB (etcd's default is %d)", c.MaxRequestBytes, DefaultMaxRequestBytes)
	case c.MaxRetries < 1 || c.MaxRetries > 1000:
		return false, configErr("max_retries %d: must be 1 to 1000", c.MaxRetries)
	}
	return secure, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tlsConfig builds the client TLS configuration from the files in c.
func (c Config) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, configErr("ca_file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, configErr("ca_file %s: no PEM certificate in it", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		certPEM, err := os.ReadFile(c.CertFile)
		if err != nil {
			return nil, configErr("cert_file: %v", err)
		}
		f, _, err := privfile.Open(c.KeyFile)
		if err != nil {
			return nil, configErr("key_file: %v", err)
		}
		keyPEM, err := io.ReadAll(io.LimitReader(f, 1<<20))
		f.Close()
		if err != nil {
			return nil, configErr("key_file: %v", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		clear(keyPEM)
		if err != nil {
			return nil, configErr("cert_file %s and key_file %s: %v", c.CertFile, c.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
