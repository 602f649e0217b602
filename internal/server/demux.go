package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// One port serves people (REST over HTTPS, bearer tokens) and agents (gRPC
// over mutual TLS). The listener completes each TLS handshake itself and
// routes a connection that presented a verified client certificate, which
// only agents have, to gRPC's own HTTP/2 transport, and all others to
// net/http. gRPC's transport costs far less memory and CPU per agent stream
// than gRPC served through net/http (see docs/benchmarks.md); a gRPC request
// without a certificate still reaches net/http, which hands it to the same
// gRPC server, where it is refused.

// chanListener is a net.Listener fed with connections by demux.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error { l.once.Do(func() { close(l.done) }); return nil }

func (l *chanListener) Addr() net.Addr { return l.addr }

// handshakeTimeout bounds a client's TLS handshake, from accept: a client
// that sends nothing, or a partial hello, is disconnected after it.
const handshakeTimeout = 10 * time.Second

// demux accepts connections on ln until it fails, handshakes each with cfg
// in its own goroutine, within timeout, and hands it to agents or people.
// From there on, net/http's and gRPC's own timeouts apply.
func demux(ctx context.Context, ln net.Listener, cfg *tls.Config, timeout time.Duration, people, agents *chanListener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			// The deadline is on the connection itself, so that it holds
			// whatever the handshake waits on.
			if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
				c.Close()
				return
			}
			tc := tls.Server(c, cfg)
			err := tc.HandshakeContext(ctx)
			if err == nil {
				err = c.SetDeadline(time.Time{})
			}
			if err != nil {
				c.Close()
				return
			}
			dst := people
			if len(tc.ConnectionState().VerifiedChains) > 0 {
				dst = agents
			}
			select {
			case dst.conns <- tc:
			case <-dst.done:
				tc.Close()
			}
		}()
	}
}

// handshaken is gRPC transport credentials for connections whose TLS
// handshake demux already completed: it only reports the TLS state, so the
// broker sees the agent's verified certificate as usual.
type handshaken struct{}

var _ credentials.TransportCredentials = handshaken{}

func (handshaken) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil, nil, errors.New("not a TLS connection")
	}
	return c, credentials.TLSInfo{State: tc.ConnectionState(), CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (handshaken) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("server-side credentials only")
}

func (handshaken) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.3"}
}

func (h handshaken) Clone() credentials.TransportCredentials { return h }

func (handshaken) OverrideServerName(string) error { return nil }
