package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
)

// ErrServers is returned for a --server list the agent cannot use.
var ErrServers = errors.New("bad server list")

// maxServers bounds the addresses one agent takes.
const maxServers = 64

// ParseServers splits a --server value, "host:port" or
// "a:7443,b:7443,c:7443", into its addresses. Each must be host:port with a
// port from 1 to 65535; duplicates and empty entries are refused. A host
// may be a DNS name with several A records: the agent resolves it on every
// round and tries each address.
func ParseServers(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("%w: --server is empty (want host:port, or several separated by commas)", ErrServers)
	}
	parts := strings.Split(s, ",")
	if len(parts) > maxServers {
		return nil, fmt.Errorf("%w: --server has %d addresses (at most %d)", ErrServers, len(parts), maxServers)
	}
	out := make([]string, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		host, port, err := net.SplitHostPort(p)
		if err != nil {
			return nil, fmt.Errorf("%w: --server entry %d %q: want host:port", ErrServers, i+1, p)
		}
		if host == "" || strings.ContainsFunc(host, badHostRune) {
			return nil, fmt.Errorf("%w: --server entry %d %q: bad host", ErrServers, i+1, p)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%w: --server entry %d %q: port must be 1 to 65535", ErrServers, i+1, p)
		}
		addr := net.JoinHostPort(host, port)
		if slices.Contains(out, addr) {
			return nil, fmt.Errorf("%w: --server entry %d %q is given twice", ErrServers, i+1, p)
		}
		out = append(out, addr)
	}
	return out, nil
}

// badHostRune reports whether r has no place in a host name or address:
// spaces and control characters (which the list's trimming would also
// eat), and URL punctuation.
func badHostRune(r rune) bool {
	return unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune("/\\@?#", r)
}

// Resolver looks up a host name's addresses (net.DefaultResolver does).
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// dialTarget is one address to dial: ip:port (or host:port as given), and
// the name to check in the server's certificate when it came from DNS.
type dialTarget struct {
	addr       string
	serverName string // "" when addr's host is what was given
	entry      int    // index of the --server entry it came from
}

// serverList is the agent's view of its servers: it starts at a random
// entry (so a fleet spreads over them) and moves on after each disconnect.
type serverList struct {
	entries  []string
	next     int
	last     string // the target address of the last session
	resolver Resolver
}

func newServerList(entries []string, r Resolver) *serverList {
	return &serverList{entries: entries, next: rand.N(len(entries)), resolver: r}
}

// round returns the targets to try, in order: every entry once, starting at
// the current one, a DNS name's addresses in random order (the address
// of the last session last). Names that do not resolve are left out; the
// error names them when nothing resolved.
func (l *serverList) round(ctx context.Context) ([]dialTarget, error) {
	var out []dialTarget
	var errs []error
	for i := range l.entries {
		idx := (l.next + i) % len(l.entries)
		entry := l.entries[idx]
		host, port, _ := net.SplitHostPort(entry)
		if net.ParseIP(host) != nil {
			out = append(out, dialTarget{addr: entry, entry: idx})
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ips, err := l.resolver.LookupHost(rctx, host)
		cancel()
		if err != nil || len(ips) == 0 {
			errs = append(errs, fmt.Errorf("resolve %s: %w", host, err))
			continue
		}
		rand.Shuffle(len(ips), func(i, j int) { ips[i], ips[j] = ips[j], ips[i] })
		var ts []dialTarget
		for _, ip := range ips {
			ts = append(ts, dialTarget{addr: net.JoinHostPort(ip, port), serverName: host, entry: idx})
		}
		if k := slices.IndexFunc(ts, func(t dialTarget) bool { return t.addr == l.last }); k >= 0 && len(ts) > 1 {
			ts = append(append(ts[:k:k], ts[k+1:]...), ts[k])
		}
		out = append(out, ts...)
	}
	if len(out) == 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// connected records that a session ran on target t; the next round starts
// at the entry after t's, so that a disconnected agent fails over.
func (l *serverList) connected(t dialTarget) {
	l.last = t.addr
	l.next = (t.entry + 1) % len(l.entries)
}

// cheapFailure reports whether err is a failure that cost the server
// nothing, so that retrying soon is fine: nothing listens (connection
// refused), no route, the name does not resolve, or no answer to the
// connect. A server that answered and refused us (TLS, an RPC error) is not.
func cheapFailure(err error) bool {
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		return false
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET) && isDial(err),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.EHOSTDOWN), errors.Is(err, syscall.EADDRNOTAVAIL), errors.As(err, &dnsErr):
		return true
	}
	return isDial(err) && errors.Is(err, context.DeadlineExceeded)
}

func isDial(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// backoff is the wait between rounds. After rounds in which no server
// could even be reached (cheap failures) it is capped at fastMax, so that
// an agent is back within about fastMax of a server's return; after a
// server answered and refused, or dropped a session soon, at max. Waits
// are fully jittered (uniform in [0, cap)) when cheap, so that a fleet's
// retries spread evenly; otherwise in [cap/2, cap).
//
// The two kinds count apart: the rounds of an outage, when no server could
// be reached, do not grow the wait after the first server that answers and
// then fails (a server still starting, or too busy for a handshake, as in
// the reconnect wave of 1,000 agents): that wait starts again at min, and
// only a server that keeps failing the agent pushes it towards max.
type backoff struct {
	min, fastMax, max time.Duration
	cheapN, hardN     int // failed rounds of each kind since the last good session
}

func (b *backoff) reset() { b.cheapN, b.hardN = 0, 0 }

// next returns the wait before the next round, after a round that failed
// (cheap tells how) or a session that ended.
func (b *backoff) next(cheap bool) time.Duration {
	limit, n := b.max, &b.hardN
	if cheap {
		limit, n = b.fastMax, &b.cheapN
	}
	d := b.min
	for i := 0; i < *n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	*n++
	if cheap {
		return rand.N(d + 1)
	}
	return d/2 + rand.N(d/2+1)
}
