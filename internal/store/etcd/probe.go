package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"
)

// preflight checks each endpoint by hand (TCP connect, TLS handshake, one
// HTTP request) before the gRPC client is asked, because the client waits
// for a connection until its deadline and then reports only "context
// deadline exceeded". It returns, per endpoint, the reason it is certainly
// unusable (or nil when it may be fine) and a hint, shown if the client
// later fails too.
func preflight(ctx context.Context, endpoints []string, tc *tls.Config) (errs []error, hints []string) {
	errs, hints = make([]error, len(endpoints)), make([]string, len(endpoints))
	var wg sync.WaitGroup
	for i, ep := range endpoints {
		wg.Go(func() { hints[i], errs[i] = checkEndpoint(ctx, ep, tc) })
	}
	wg.Wait()
	return errs, hints
}

func checkEndpoint(ctx context.Context, ep string, tc *tls.Config) (hint string, err error) {
	u, err := url.Parse(ep)
	if err != nil {
		return "", err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	req := "GET /version HTTP/1.1\r\nHost: " + u.Host + "\r\nConnection: close\r\n\r\n"
	if u.Scheme == "https" {
		c := tc.Clone()
		if c.ServerName == "" {
			c.ServerName = u.Hostname()
		}
		tlsConn := tls.Client(conn, c)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			var rh tls.RecordHeaderError
			if errors.As(err, &rh) || errors.Is(err, io.EOF) {
				return "", fmt.Errorf("TLS handshake: %w (the endpoint does not speak TLS: should it be http://?)", err)
			}
			return "", err
		}
		// With TLS 1.3 a server that wants a client certificate says so
		// only after the handshake: the answer to a request shows it.
		if _, err := io.WriteString(tlsConn, req); err != nil {
			return "", remoteTLSError(err)
		}
		_, err := tlsConn.Read(make([]byte, 1))
		err = remoteTLSError(err)
		if err != nil && strings.Contains(err.Error(), "certificate required") {
			if len(c.Certificates) == 0 {
				return "", fmt.Errorf("%w (the server requires a client certificate: set cert_file and key_file)", err)
			}
			return "", fmt.Errorf("%w (cert_file is not signed by a CA the server trusts)", err)
		}
		return "", err
	}
	if _, err := io.WriteString(conn, req); err != nil {
		return "", nil
	}
	// etcd answers HTTP/1.1 on its client URLs; one serving TLS there
	// closes a plain connection without a word.
	if n, err := conn.Read(make([]byte, 1)); n == 0 && errors.Is(err, io.EOF) {
		return ep + " closed a plain HTTP connection unanswered: does it serve TLS (https://)?", nil
	}
	return "", nil
}

// remoteTLSError returns err if it is a TLS alert from the server (such as
// "certificate required"), else nil: the endpoint may be fine.
func remoteTLSError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return err
	}
	return nil
}
