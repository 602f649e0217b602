package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Server certificate file names.
const (
	ServerCertFile = "server.pem"     // mode 0644
	ServerKeyFile  = "server-key.pem" // mode 0600
)

// defaultSANs are always in the server certificate.
var defaultSANs = []string{"localhost", "127.0.0.1", "::1"}

// LoadOrIssueServerCert returns the server certificate kept in dir
// (server.pem and server-key.pem), issuing a new one with a new key, valid
// for ttl (DefaultServerTTL when ttl <= 0), when the files are missing or
// damaged, when they were not issued by ca, when their names differ from
// sans, or when less than a third of their lifetime is left. sans are DNS
// names or IP addresses; "localhost", 127.0.0.1 and ::1 are always added.
//
// A long-running server should call it again now and then (see
// CA.ServerCertGetter), since a certificate is only reissued by a call.
func (ca *CA) LoadOrIssueServerCert(dir string, sans []string, ttl time.Duration) (tls.Certificate, error) {
	return ca.loadOrIssueServerCert(dir, sans, ttl, time.Now())
}

func (ca *CA) loadOrIssueServerCert(dir string, sans []string, ttl time.Duration, now time.Time) (tls.Certificate, error) {
	dns, ips, err := parseSANs(sans)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPath, keyPath := filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile)
	if c, ok := ca.usableServerCert(certPath, keyPath, dns, ips, now); ok {
		return c, nil
	}
	if ttl <= 0 {
		ttl = DefaultServerTTL
	}
	return ca.issueServerCert(dir, certPath, keyPath, dns, ips, ttl, now)
}

// usableServerCert loads the server certificate and reports whether it can
// be kept. Any problem means "issue a new one".
func (ca *CA) usableServerCert(certPath, keyPath string, dns []string, ips []net.IP, now time.Time) (tls.Certificate, bool) {
	cert, err := readCertFile(certPath)
	if err != nil {
		return tls.Certificate{}, false
	}
	key, err := readKeyFile(keyPath)
	if err != nil || !sameKey(key, cert.PublicKey) || cert.CheckSignatureFrom(ca.Cert) != nil {
		return tls.Certificate{}, false
	}
	if !slices.Equal(cert.DNSNames, dns) || !slices.EqualFunc(cert.IPAddresses, ips, net.IP.Equal) {
		return tls.Certificate{}, false
	}
	life := cert.NotAfter.Sub(cert.NotBefore)
	if now.Before(cert.NotBefore) || !now.Before(cert.NotAfter.Add(-life/3)) {
		return tls.Certificate{}, false
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, true
}

func (ca *CA) issueServerCert(dir, certPath, keyPath string, dns []string, ips []net.IP, ttl time.Duration, now time.Time) (tls.Certificate, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate: %w", err)
	}
	tmpl, err := ca.leafTemplate(now, ttl)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl.Subject = pkix.Name{CommonName: "coffer-server"}
	tmpl.DNSNames = dns
	tmpl.IPAddresses = ips
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate: %w", err)
	}
	kp, err := keyPEM(key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate: %w", err)
	}
	defer clear(kp)
	// Key first: after a crash in between, the pair does not match and the
	// next call issues again.
	if err := writeFile(keyPath, kp, 0o600, false); err != nil {
		return tls.Certificate{}, fmt.Errorf("write server key: %w", err)
	}
	if err := writeFile(certPath, certPEM(der), 0o644, false); err != nil {
		return tls.Certificate{}, fmt.Errorf("write server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// parseSANs splits names into sorted, de-duplicated DNS names and IP
// addresses, with the default names added.
func parseSANs(sans []string) ([]string, []net.IP, error) {
	var dns []string
	var ips []net.IP
	for _, s := range append(slices.Clone(sans), defaultSANs...) {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if ip := net.ParseIP(s); ip != nil {
			if v4 := ip.To4(); v4 != nil {
				ip = v4
			}
			ips = append(ips, ip)
			continue
		}
		name := strings.TrimSuffix(strings.ToLower(s), ".")
		if !validDNSName(name) {
			return nil, nil, fmt.Errorf("server name %q is neither a DNS name nor an IP address", s)
		}
		dns = append(dns, name)
	}
	slices.Sort(dns)
	dns = slices.Compact(dns)
	slices.SortFunc(ips, func(a, b net.IP) int { return strings.Compare(string(a), string(b)) })
	ips = slices.CompactFunc(ips, net.IP.Equal)
	return dns, ips, nil
}

// validDNSName accepts host names, optionally with a leading "*." wildcard.
func validDNSName(name string) bool {
	name = strings.TrimPrefix(name, "*.")
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

// ServerCertGetter returns a tls.Config.GetCertificate function that serves
// the server certificate from dir and reissues it (LoadOrIssueServerCert)
// once less than a third of its lifetime is left, so that a server running
// for months never serves an expired certificate. The first certificate is
// loaded or issued before it returns. If a reissue fails, the error is
// logged, the current certificate keeps being served, and a handshake at
// least a minute later tries again. logger may be nil.
func (ca *CA) ServerCertGetter(dir string, sans []string, ttl time.Duration, logger *slog.Logger) (func(*tls.ClientHelloInfo) (*tls.Certificate, error), error) {
	return ca.serverCertGetter(dir, sans, ttl, logger, time.Now)
}

func (ca *CA) serverCertGetter(dir string, sans []string, ttl time.Duration, logger *slog.Logger, clock func() time.Time) (func(*tls.ClientHelloInfo) (*tls.Certificate, error), error) {
	cert, err := ca.loadOrIssueServerCert(dir, sans, ttl, clock())
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var (
		mu        sync.Mutex
		cur       = &cert
		nextTry   time.Time
		retryWait = time.Minute
	)
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		now := clock()
		life := cur.Leaf.NotAfter.Sub(cur.Leaf.NotBefore)
		if now.Before(cur.Leaf.NotAfter.Add(-life/3)) || now.Before(nextTry) {
			return cur, nil
		}
		c, err := ca.loadOrIssueServerCert(dir, sans, ttl, now)
		if err != nil {
			nextTry = now.Add(retryWait)
			logger.Error("cannot reissue the server certificate; serving the current one",
				"err", err, "expires", cur.Leaf.NotAfter)
			return cur, nil
		}
		logger.Info("server certificate reissued", "serial", c.Leaf.SerialNumber.Text(16), "expires", c.Leaf.NotAfter)
		cur = &c
		return cur, nil
	}, nil
}

// ServerTLSConfig returns the server's TLS configuration: TLS 1.3 only,
// serving cert, and verifying a client certificate against ca when one is
// given (tls.VerifyClientCertIfGiven). Connections without a certificate
// are accepted; routes for agents must check PeerAgentName.
func ServerTLSConfig(cert tls.Certificate, ca *CA) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
	}
}
