package agent

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
)

// TLS session resumption. A fleet reconnecting to a returning server costs
// it (and each host) one full mutual-TLS handshake per agent: certificate
// chain checks and signatures on both sides. With a session ticket from
// the last session (the servers of one installation can open each other's
// tickets across restarts), the handshake is a resumption: a fresh key
// exchange, no certificate work. The server still checks the agent's
// certificate that the ticket carries (enrollment, revocation, expiry) on
// every stream, as after a full handshake.

// sessionCache is the agent's client session cache. A ticket carries the
// certificate of the handshake that made it, so tickets are kept per
// certificate: after a renewal the agent never resumes a session of its
// old certificate (the server would soon stop taking it), it makes a full
// handshake with the new one.
type sessionCache struct {
	inner tls.ClientSessionCache
	leaf  func() *x509.Certificate // the agent's current certificate
}

// sessionCacheSize bounds the tickets kept: a few per server address.
const sessionCacheSize = 4 * maxServers

func newSessionCache(leaf func() *x509.Certificate) *sessionCache {
	return &sessionCache{inner: tls.NewLRUClientSessionCache(sessionCacheSize), leaf: leaf}
}

func (c *sessionCache) key(server string) string {
	serial := ""
	if l := c.leaf(); l != nil && l.SerialNumber != nil {
		serial = hex.EncodeToString(l.SerialNumber.Bytes())
	}
	return serial + "|" + server
}

func (c *sessionCache) Get(server string) (*tls.ClientSessionState, bool) {
	return c.inner.Get(c.key(server))
}

func (c *sessionCache) Put(server string, cs *tls.ClientSessionState) {
	c.inner.Put(c.key(server), cs)
}
