package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// RenewFunc asks the server for a new agent certificate: it sends csrDER,
// made with key, over the agent's current mTLS connection and returns the
// issued certificate (DER).
type RenewFunc func(ctx context.Context, key *ecdsa.PrivateKey, csrDER []byte) (certDER []byte, err error)

// RenewerOptions configures a Renewer. The zero value works.
type RenewerOptions struct {
	Dir      string           // if set, each renewed identity is saved there (SaveAgentIdentity)
	Logger   *slog.Logger     // nil: discard
	Now      func() time.Time // nil: time.Now
	MinRetry time.Duration    // first wait after a failed renewal; 0: 1s
	MaxRetry time.Duration    // longest wait between attempts; 0: 5m
}

// Renewal timing: renew at 2/3 of the lifetime, ±5% of the lifetime; warn
// loudly in the last sixth; sleep at most maxSleep at a time so that a
// suspended host notices the wall clock on waking.
const (
	renewAtFraction = 2.0 / 3
	renewJitter     = 0.05
	urgentFraction  = 1.0 / 6
	maxSleep        = 5 * time.Minute
)

// Renewer holds an agent's current certificate, serves it to the TLS stack
// (GetClientCertificate) and renews it in Run. It is safe for concurrent
// use.
type Renewer struct {
	renew RenewFunc
	opts  RenewerOptions
	log   *slog.Logger

	// for tests; set before Run
	after  func(time.Duration) <-chan time.Time
	jitter func() float64 // in [-1, 1)

	renewMu sync.Mutex // one renewal (and save) at a time

	mu      sync.RWMutex
	cert    *tls.Certificate
	name    string
	renewAt time.Time
	bad     error // why the initial certificate cannot be used
}

// NewRenewer returns a Renewer starting with cert, an agent certificate
// (Leaf is parsed if unset), that renews through renew.
func NewRenewer(cert tls.Certificate, renew RenewFunc, opts RenewerOptions) *Renewer {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MinRetry <= 0 {
		opts.MinRetry = time.Second
	}
	if opts.MaxRetry <= 0 {
		opts.MaxRetry = 5 * time.Minute
	}
	r := &Renewer{
		renew:  renew,
		opts:   opts,
		log:    opts.Logger,
		after:  time.After,
		jitter: func() float64 { return 2*rand.Float64() - 1 },
	}
	if cert.Leaf == nil && len(cert.Certificate) > 0 {
		cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	name, err := AgentName(cert.Leaf)
	if err != nil {
		r.bad = fmt.Errorf("renewer: %w", err)
	}
	r.adopt(&cert, name)
	return r
}

// adopt makes c the current certificate and draws its renewal time.
func (r *Renewer) adopt(c *tls.Certificate, name string) {
	var at time.Time
	if c.Leaf != nil {
		life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
		at = c.Leaf.NotBefore.Add(time.Duration(float64(life) * (renewAtFraction + renewJitter*r.jitter())))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cert, r.name, r.renewAt = c, name, at
}

// GetClientCertificate returns the current certificate; use it as
// tls.Config.GetClientCertificate.
func (r *Renewer) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert, nil
}

// Leaf returns the current certificate, parsed.
func (r *Renewer) Leaf() *x509.Certificate {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert.Leaf
}

// RenewAt returns when Run will next renew: at 2/3 of the current
// certificate's lifetime, ±5% of the lifetime (drawn once per certificate).
func (r *Renewer) RenewAt() time.Time {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.renewAt
}

// Run renews the certificate each time its renewal time comes, until ctx
// ends; it then returns ctx's error. A failed renewal is retried with
// exponential backoff (MinRetry doubling to MaxRetry, never waiting past a
// quarter of the time left); failures are logged as warnings, then as
// errors once less than a sixth of the lifetime is left or the certificate
// has expired. Run returns at once if the initial certificate is not an
// agent certificate.
func (r *Renewer) Run(ctx context.Context) error {
	if r.bad != nil {
		return r.bad
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if wait := r.RenewAt().Sub(r.opts.Now()); wait > 0 {
			if err := r.sleep(ctx, min(wait, maxSleep)); err != nil {
				return err
			}
			continue // look at the clock again
		}
		backoff := r.opts.MinRetry
		for {
			err := r.RenewNow(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			wait := r.logFailure(err, backoff)
			if err := r.sleep(ctx, wait); err != nil {
				return err
			}
			backoff = min(2*backoff, r.opts.MaxRetry)
		}
	}
}

// logFailure logs a failed renewal, louder as expiry nears, and returns how
// long to wait before the next attempt.
func (r *Renewer) logFailure(err error, backoff time.Duration) time.Duration {
	leaf := r.Leaf()
	left := leaf.NotAfter.Sub(r.opts.Now())
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	wait := backoff
	if left > 0 {
		wait = max(min(backoff, left/4), r.opts.MinRetry)
	}
	attrs := []any{"agent", r.name, "err", err, "expires", leaf.NotAfter, "retry_in", wait}
	switch {
	case left <= 0:
		r.log.Error("agent certificate has EXPIRED and could not be renewed: the agent cannot authenticate to the server; "+
			"check connectivity or enroll the agent again", attrs...)
	case float64(left) < urgentFraction*float64(life):
		r.log.Error("agent certificate expires soon and could not be renewed", append(attrs, "time_left", left.Round(time.Second))...)
	default:
		r.log.Warn("agent certificate renewal failed; will retry", attrs...)
	}
	return wait
}

func (r *Renewer) sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-r.after(d):
		return nil
	}
}

// RenewNow renews the certificate once, now: it makes a new key and
// request, calls the renew function, checks the issued certificate (same
// agent, matching key, currently valid), makes it current and saves it to
// Dir if set. If saving fails the new certificate is still used, and the
// error says so. Concurrent calls are serialized.
func (r *Renewer) RenewNow(ctx context.Context) error {
	if r.bad != nil {
		return r.bad
	}
	r.renewMu.Lock()
	defer r.renewMu.Unlock()
	r.mu.RLock()
	name := r.name
	r.mu.RUnlock()
	key, err := NewAgentKey()
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	csr, err := NewCSR(key, name)
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	der, err := r.renew(ctx, key, csr)
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("renew: issued certificate: %w", err)
	}
	if got, err := AgentName(leaf); err != nil || got != name {
		return fmt.Errorf("renew: issued certificate is not for agent %q: %w", name, errors.Join(ErrNotAgentCert, err))
	}
	if !sameKey(key, leaf.PublicKey) {
		return errors.New("renew: issued certificate is for another key")
	}
	if now := r.opts.Now(); now.Before(leaf.NotBefore) || !now.Before(leaf.NotAfter) {
		return fmt.Errorf("renew: issued certificate is not valid now (%s to %s)", leaf.NotBefore, leaf.NotAfter)
	}
	r.adopt(&tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, name)
	r.log.Info("agent certificate renewed", "agent", name, "serial", leaf.SerialNumber.Text(16), "expires", leaf.NotAfter)
	if r.opts.Dir != "" {
		if err := SaveAgentIdentity(r.opts.Dir, der, key); err != nil {
			// In use, but a restart would load the old one: retry soon.
			return fmt.Errorf("renew: certificate renewed but not saved: %w", err)
		}
	}
	return nil
}
