package server

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"coffer/internal/identity"
)

// TLS session tickets that outlive a server process. Go's default ticket
// keys are random per process: after a restart (or on another server of
// the same installation) no agent could resume its session, and a fleet's
// reconnect wave was one full mutual-TLS handshake per agent, certificate
// checks and signatures on both sides, all at once (docs/benchmarks.md,
// the reconnect wave). The servers of one installation share a CA; the
// ticket keys are derived from its private key (HKDF-SHA256, one key per
// day), so every server opens the tickets any of them issued over the last
// ticketDays, and nothing new has to be stored or shared.
//
// What a ticket key gives: a ticket is sealed with AES-256-GCM under the
// key of its day. Whoever holds a ticket key could forge a session of any
// agent, but deriving it needs the CA key, which can mint agent
// certificates anyway; and TLS 1.3 resumption still runs a fresh key
// exchange, so a ticket key opens no recorded traffic. A resumed
// connection carries the certificate of the full handshake that made it:
// Go refuses to resume once that certificate expired, and the broker checks
// enrollment and revocation on every stream as after a full handshake.

// ticketDays is how long a ticket can be resumed, in daily keys: Go's own
// limit is 7 days. Agents' sessions last days, and the ticket an agent
// holds is that of its last handshake.
const ticketDays = 8

// ticketSealer seals and opens session tickets with the day keys derived
// from a secret.
type ticketSealer struct {
	secret []byte
	now    func() time.Time

	mu   sync.Mutex
	keys map[uint32]cipher.AEAD // by day
}

func newTicketSealer(ca *identity.CA) (*ticketSealer, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, fmt.Errorf("session tickets: %w", err)
	}
	return &ticketSealer{secret: der, now: time.Now, keys: map[uint32]cipher.AEAD{}}, nil
}

func (t *ticketSealer) day(at time.Time) uint32 { return uint32(at.Unix() / 86400) }

// key returns the AEAD of day d.
func (t *ticketSealer) key(d uint32) (cipher.AEAD, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if k := t.keys[d]; k != nil {
		return k, nil
	}
	raw, err := hkdf.Key(sha256.New, t.secret, nil, fmt.Sprintf("coffer tls session ticket key v1, day %d", d), 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	k, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	today := t.day(t.now())
	for old := range t.keys {
		if old+ticketDays < today {
			delete(t.keys, old)
		}
	}
	t.keys[d] = k
	return k, nil
}

// wrap is tls.Config.WrapSession: day (4 bytes) | nonce | sealed state.
func (t *ticketSealer) wrap(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	state, err := ss.Bytes()
	if err != nil {
		return nil, err
	}
	d := t.day(t.now())
	k, err := t.key(d)
	if err != nil {
		return nil, err
	}
	out := binary.BigEndian.AppendUint32(nil, d)
	nonce := make([]byte, k.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out = append(out, nonce...)
	return k.Seal(out, nonce, state, out[:4]), nil
}

// unwrap is tls.Config.UnwrapSession: a ticket it cannot open (another
// installation's, too old, altered) is no error, only a full handshake.
func (t *ticketSealer) unwrap(identity []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
	if len(identity) < 4 {
		return nil, nil
	}
	d := binary.BigEndian.Uint32(identity)
	today := t.day(t.now())
	if d > today || d+ticketDays <= today {
		return nil, nil
	}
	k, err := t.key(d)
	if err != nil {
		return nil, nil
	}
	rest := identity[4:]
	if len(rest) < k.NonceSize()+k.Overhead() {
		return nil, nil
	}
	state, err := k.Open(nil, rest[:k.NonceSize()], rest[k.NonceSize():], identity[:4])
	if err != nil {
		return nil, nil
	}
	ss, err := tls.ParseSessionState(state)
	if err != nil {
		return nil, nil
	}
	return ss, nil
}

// resumeAcrossRestarts makes cfg issue and take session tickets that
// every server of the installation (ca) opens, across restarts. A CA key
// that cannot be exported (one held by a KMS) keeps Go's per-process
// ticket keys: sessions then resume only until the server restarts.
func resumeAcrossRestarts(cfg *tls.Config, ca *identity.CA) {
	if t, err := newTicketSealer(ca); err == nil {
		cfg.WrapSession, cfg.UnwrapSession = t.wrap, t.unwrap
	}
}
