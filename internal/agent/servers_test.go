package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseServers(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		errPart string // "" = valid
	}{
		{in: "127.0.0.1:7443", want: []string{"127.0.0.1:7443"}},
		{in: "a:7443,b:7443,c:7443", want: []string{"a:7443", "b:7443", "c:7443"}},
		{in: " a:1 , b:2 ", want: []string{"a:1", "b:2"}},
		{in: "[::1]:7443,coffer.example.com:443", want: []string{"[::1]:7443", "coffer.example.com:443"}},
		{in: "", errPart: "--server is empty"},
		{in: "  ", errPart: "--server is empty"},
		{in: "a:1,", errPart: `entry 2 "": want host:port`},
		{in: "a:1,,b:2", errPart: "entry 2"},
		{in: "a", errPart: `entry 1 "a": want host:port`},
		{in: ":7443", errPart: "bad host"},
		{in: "a:0", errPart: "port must be 1 to 65535"},
		{in: "a:65536", errPart: "port must be 1 to 65535"},
		{in: "a:http", errPart: "port must be 1 to 65535"},
		{in: "a/b:1", errPart: "bad host"},
		{in: "[\f]:1", errPart: "bad host"}, // a control character the trimming would eat (fuzz finding)
		{in: "[a b]:1", errPart: "bad host"},
		{in: "a:1,b:2,a:1", errPart: `entry 3 "a:1" is given twice`},
		{in: "https://a:1", errPart: "entry 1"},
		{in: strings.Repeat("a:1,", maxServers) + "a:2", errPart: "at most"},
	} {
		got, err := ParseServers(tc.in)
		if tc.errPart == "" {
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("ParseServers(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
			continue
		}
		if !errors.Is(err, ErrServers) || !strings.Contains(err.Error(), tc.errPart) {
			t.Errorf("ParseServers(%q) = %q, %v; want an ErrServers naming %q", tc.in, got, err, tc.errPart)
		}
	}
}

func FuzzParseServers(f *testing.F) {
	for _, s := range []string{"a:1", "a:1,b:2", "[::1]:7443", "", ",", "a:99999", "x:1,x:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseServers(s)
		if err != nil {
			if !errors.Is(err, ErrServers) || got != nil {
				t.Fatalf("error %v with %q", err, got)
			}
			return
		}
		if len(got) == 0 || len(got) > maxServers {
			t.Fatalf("%d addresses", len(got))
		}
		for _, a := range got {
			host, _, err := net.SplitHostPort(a)
			if err != nil || host == "" || strings.Contains(a, ",") {
				t.Fatalf("bad address %q", a)
			}
		}
		// What ParseServers returns, it takes again unchanged.
		again, err := ParseServers(strings.Join(got, ","))
		if err != nil || !slices.Equal(again, got) {
			t.Fatalf("not stable: %q -> %q, %v", got, again, err)
		}
	})
}

func TestBackoffCheapIsCappedLowAndJittered(t *testing.T) {
	b := backoff{min: 200 * time.Millisecond, fastMax: time.Second, max: 30 * time.Second}
	var seenLow, seenHigh bool
	for i := range 200 {
		d := b.next(true)
		if d < 0 || d > time.Second {
			t.Fatalf("round %d: cheap wait %v outside [0, 1s]", i, d)
		}
		if i > 10 && d < 100*time.Millisecond {
			seenLow = true
		}
		if i > 10 && d > 900*time.Millisecond {
			seenHigh = true
		}
	}
	if !seenLow || !seenHigh {
		t.Fatalf("cheap waits not spread over [0, 1s]: low %v high %v", seenLow, seenHigh)
	}
}

func TestBackoffRefusedGrowsToMax(t *testing.T) {
	b := backoff{min: 200 * time.Millisecond, fastMax: time.Second, max: 30 * time.Second}
	want := []time.Duration{200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000}
	for i, w := range want {
		w *= time.Millisecond
		if d := b.next(false); d < w/2 || d > w {
			t.Fatalf("round %d: wait %v, want in [%v, %v]", i, d, w/2, w)
		}
	}
	// A cheap round after many failed ones is still capped low: once the
	// server is gone (refused), the agent comes back soon after it returns.
	if d := b.next(true); d > time.Second {
		t.Fatalf("cheap wait after long backoff = %v", d)
	}
	b.reset()
	if d := b.next(true); d > 200*time.Millisecond {
		t.Fatalf("first wait after reset = %v, want at most MinBackoff", d)
	}
}

// A server that comes back after an outage and fails the agent's first
// try (still starting, or too busy for the handshake) costs that agent a
// short wait, not one grown by the outage's unreachable rounds: before,
// 40 rounds of an outage made that wait 15-30 s, and the last of 1,000
// agents converged 35 s after the server's return.
func TestBackoffOutageDoesNotGrowTheWaitAfterAnAnswer(t *testing.T) {
	b := backoff{min: 200 * time.Millisecond, fastMax: time.Second, max: 30 * time.Second}
	for range 40 {
		b.next(true) // the server is down: connection refused
	}
	if d := b.next(false); d > 200*time.Millisecond {
		t.Fatalf("first wait after the server answered and failed = %v, want at most MinBackoff", d)
	}
	if d := b.next(false); d < 200*time.Millisecond || d > 400*time.Millisecond {
		t.Fatalf("second failure in a row: wait %v, want in [200ms, 400ms]", d)
	}
	if d := b.next(true); d > time.Second {
		t.Fatalf("cheap wait = %v, want at most FastMaxBackoff", d)
	}
}

// fakeResolver answers from a map.
type fakeResolver map[string][]string

func (r fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if ips, ok := r[host]; ok {
		return slices.Clone(ips), nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func addrs(ts []dialTarget) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.addr)
	}
	return out
}

func TestServerListStartsAtRandomAndFailsOver(t *testing.T) {
	entries := []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}
	starts := map[string]int{}
	for range 300 {
		l := newServerList(entries, fakeResolver{})
		ts, err := l.round(context.Background())
		if err != nil || len(ts) != 3 {
			t.Fatalf("round = %v, %v", ts, err)
		}
		starts[ts[0].addr]++
		// Every entry once, in list order from the start.
		i := slices.Index(entries, ts[0].addr)
		for k, tg := range ts {
			if tg.addr != entries[(i+k)%3] || tg.serverName != "" {
				t.Fatalf("round order %q", addrs(ts))
			}
		}
		// After a session on one, the next round starts at the one after.
		l.connected(ts[1])
		ts2, _ := l.round(context.Background())
		if ts2[0].addr != entries[(i+2)%3] {
			t.Fatalf("after a session on %s the next round starts at %s", ts[1].addr, ts2[0].addr)
		}
	}
	for _, e := range entries {
		if starts[e] < 50 { // 100 expected
			t.Fatalf("agents do not spread over the servers: starts %v", starts)
		}
	}
}

func TestServerListResolvesEveryAddress(t *testing.T) {
	r := fakeResolver{"coffer.test": {"127.0.0.2", "127.0.0.3", "127.0.0.4"}}
	l := newServerList([]string{"coffer.test:7443", "gone.test:7443", "127.0.0.1:7443"}, r)
	l.next = 0
	ts, err := l.round(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := addrs(ts)
	if len(got) != 4 || got[3] != "127.0.0.1:7443" {
		t.Fatalf("round = %q", got)
	}
	slices.Sort(got[:3])
	if !slices.Equal(got[:3], []string{"127.0.0.2:7443", "127.0.0.3:7443", "127.0.0.4:7443"}) {
		t.Fatalf("resolved = %q", got)
	}
	for _, tg := range ts[:3] {
		if tg.serverName != "coffer.test" || tg.entry != 0 {
			t.Fatalf("target %+v: the certificate must be checked for the name given", tg)
		}
	}
	// After a session on one of the name's addresses, a one-name list
	// tries that address last.
	one := newServerList([]string{"coffer.test:7443"}, r)
	for range 50 {
		ts, _ := one.round(context.Background())
		one.connected(ts[0])
		ts2, _ := one.round(context.Background())
		if ts2[2].addr != ts[0].addr {
			t.Fatalf("after a session on %s the next round is %q", ts[0].addr, addrs(ts2))
		}
	}
	// Nothing resolves: an error that names the hosts, and a cheap one.
	none := newServerList([]string{"gone.test:1", "nope.test:2"}, r)
	_, err = none.round(context.Background())
	if err == nil || !strings.Contains(err.Error(), "gone.test") || !strings.Contains(err.Error(), "nope.test") || !cheapFailure(err) {
		t.Fatalf("round with no name resolving: %v", err)
	}
}

func TestCheapFailure(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	_, refused := net.Dial("tcp", dead)
	if refused == nil {
		t.Skip("a closed port accepted a connection")
	}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("%s: %w", dead, refused), true},
		{&net.OpError{Op: "dial", Err: context.DeadlineExceeded}, true},
		{&net.DNSError{Err: "no such host", Name: "x"}, true},
		{errors.New("rpc error: code = Unavailable desc = connection error: authentication handshake failed"), false},
		{context.DeadlineExceeded, false},
		{nil, false},
	} {
		if got := cheapFailure(tc.err); got != tc.want {
			t.Errorf("cheapFailure(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
