package keystore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"

	"golang.org/x/time/rate"
)

// ReadLimited reads r to the end, failing with ErrTooLarge once more than
// max bytes come. On failure the partial buffer is zeroed.
func ReadLimited(r io.Reader, max int64) ([]byte, error) {
	buf, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		clear(buf)
		return nil, err
	}
	if int64(len(buf)) > max {
		clear(buf)
		return nil, fmt.Errorf("%w: the upstream's response is larger than %d bytes", ErrTooLarge, max)
	}
	return buf, nil
}

// RateTransport wraps rt so that every request first waits for lim (nil:
// no limit), as long as its context allows.
func RateTransport(rt http.RoundTripper, lim *rate.Limiter) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	if lim == nil {
		return rt
	}
	return &rateTransport{rt: rt, lim: lim}
}

type rateTransport struct {
	rt  http.RoundTripper
	lim *rate.Limiter
}

func (t *rateTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.lim.Wait(req.Context()); err != nil {
		return nil, fmt.Errorf("rate limit (max_requests_per_second): %w", err)
	}
	return t.rt.RoundTrip(req)
}

// Doer is an HTTP client with a Do method (azcore's Transporter, the AWS
// SDK's HTTPClient).
type Doer interface {
	Do(req *http.Request) (*http.Response, error)
}

// RateDoer is RateTransport for a Doer.
func RateDoer(d Doer, lim *rate.Limiter) Doer {
	if lim == nil {
		return d
	}
	return rateDoer{d: d, lim: lim}
}

type rateDoer struct {
	d   Doer
	lim *rate.Limiter
}

func (r rateDoer) Do(req *http.Request) (*http.Response, error) {
	if err := r.lim.Wait(req.Context()); err != nil {
		return nil, fmt.Errorf("rate limit (max_requests_per_second): %w", err)
	}
	return r.d.Do(req)
}

// LimitTransport wraps rt so that no response body yields more than max
// bytes: reading on fails with an error wrapping ErrTooLarge. Clients that
// decode whole bodies (the cloud SDKs) so never hold more than max bytes of
// one response.
func LimitTransport(rt http.RoundTripper, max int64) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return &limitTransport{rt: rt, max: max}
}

type limitTransport struct {
	rt  http.RoundTripper
	max int64
}

func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return LimitResponse(t.rt.RoundTrip(req))(t.max)
}

// LimitResponse limits the body of the response of an HTTP exchange to max
// bytes, as LimitTransport does; for clients that take an HTTP client with
// a Do method rather than a transport:
//
//	resp, err := keystore.LimitResponse(client.Do(req))(max)
func LimitResponse(resp *http.Response, err error) func(max int64) (*http.Response, error) {
	return func(max int64) (*http.Response, error) {
		if err != nil || resp.Body == nil {
			return resp, err
		}
		if resp.ContentLength > max {
			resp.Body.Close()
			return nil, fmt.Errorf("%w: the upstream's response is %d bytes, more than %d", ErrTooLarge, resp.ContentLength, max)
		}
		resp.Body = &limitBody{rc: resp.Body, left: max}
		return resp, nil
	}
}

type limitBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, fmt.Errorf("%w: the upstream's response is too long", ErrTooLarge)
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return n, fmt.Errorf("%w: the upstream's response is too long", ErrTooLarge)
	}
	return n, err
}

func (b *limitBody) Close() error { return b.rc.Close() }

// TransportError classifies an error of an HTTP exchange that got no
// response: a rejected client certificate (a TLS alert from the server
// about our certificate) is ErrAccessLost; a body over the limit is
// ErrTooLarge; everything else (refused, reset, timeout, DNS, an untrusted
// server certificate, cancellation) is ErrUnreachable.
func TransportError(err error) error {
	var (
		alert tls.AlertError
		op    *net.OpError
	)
	switch {
	case errors.Is(err, ErrTooLarge):
		return ErrTooLarge
	case errors.As(err, &alert) && certAlert(uint8(alert)):
		return ErrAccessLost
	case errors.As(err, &op) && op.Op == "remote error" && op.Err != nil && peerRefusedCert(op.Err.Error()):
		// An alert the server sent; crypto/tls does not export its type.
		return ErrAccessLost
	}
	return ErrUnreachable
}

// peerRefusedCert reports whether a received TLS alert's text is one of the
// certificate alerts (see certAlert).
func peerRefusedCert(msg string) bool {
	for _, s := range []string{"bad certificate", "unsupported certificate", "revoked certificate", "expired certificate",
		"unknown certificate", "unknown certificate authority", "access denied", "certificate required"} {
		if strings.HasSuffix(msg, "tls: "+s) {
			return true
		}
	}
	return false
}

// certAlert reports whether a TLS alert says the peer refused our
// certificate: bad_certificate (42) to unknown_ca (48), access_denied (49),
// certificate_required (116).
func certAlert(a uint8) bool {
	return (a >= 42 && a <= 46) || a == 48 || a == 49 || a == 116
}

// StatusError classifies an HTTP status code an upstream answered with:
// 401 and 403 are ErrAccessLost, 404 and 410 ErrNotFound, everything else
// (429, 5xx, odd codes) ErrUnreachable. Upstreams refine this with the
// error codes in their bodies.
func StatusError(code int) error {
	switch code {
	case http.StatusUnauthorized, http.StatusForbidden:
		return ErrAccessLost
	case http.StatusNotFound, http.StatusGone:
		return ErrNotFound
	}
	return ErrUnreachable
}

// IsContextError reports whether err is ctx's cancellation or deadline.
func IsContextError(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
}

// CertPool reads a PEM file of CA certificates (for a private upstream CA).
// An empty path means the system pool.
func CertPool(path string) (*x509.CertPool, error) {
	if path == "" {
		return x509.SystemCertPool()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// ReadSecretFile reads a credential file (a token, an API key, a secret id):
// at most 64 KiB, surrounding white space trimmed, not empty. Errors name
// the file, never its content.
func ReadSecretFile(key, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	defer f.Close()
	b, err := ReadLimited(f, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", key, path, err)
	}
	start, end := 0, len(b)
	for start < end && isSpace(b[start]) {
		start++
	}
	for end > start && isSpace(b[end-1]) {
		end--
	}
	if start == end {
		clear(b)
		return nil, fmt.Errorf("%s %s: the file is empty", key, path)
	}
	out := append([]byte(nil), b[start:end]...)
	clear(b)
	return out, nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }
