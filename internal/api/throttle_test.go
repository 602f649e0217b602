package api

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newTestThrottle(c *clock) *throttle { t := newThrottle(5, time.Minute); t.now = c.now; return t }
func failN(t *throttle, src string, n int) {
	for range n {
		t.fail(src)
	}
}

// spray returns the i-th of many distinct synthetic sources, each in its own
// network: IPv4 /24s, then IPv6 /64s.
func spray(i int) string {
	if i < 1<<16 {
		return netip.AddrFrom4([4]byte{11, byte(i >> 8), byte(i), 7}).String()
	}
	return fmt.Sprintf("2001:db8:%x:%x::1", i>>16, i&0xffff)
}

func TestThrottleNetworks(t *testing.T) {
	for _, tt := range []struct{ src, net string }{
		{"10.1.2.3", "10.1.2.0/24"},
		{"::ffff:10.1.2.200", "10.1.2.0/24"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"not-an-address", "?not-an-address"},
	} {
		if got := network(tt.src); got != tt.net {
			t.Errorf("network(%q) = %q, want %q", tt.src, got, tt.net)
		}
	}
	c := &clock{time.Unix(1e9, 0)}
	th := newTestThrottle(c)
	// Five failures spread over five addresses of one /24 block all of it.
	for i := range 5 {
		if th.blocked(fmt.Sprintf("10.1.2.%d", i+1)) != 0 {
			t.Fatalf("blocked after %d failures", i)
		}
		th.fail(fmt.Sprintf("10.1.2.%d", i+1))
	}
	if w := th.blocked("10.1.2.250"); w != time.Minute {
		t.Fatalf("another address of the /24: wait %v", w)
	}
	if th.blocked("10.1.3.1") != 0 {
		t.Fatal("the next /24 is blocked")
	}
	// IPv6: one /64 is one bucket.
	failN(th, "2001:db8::1", 3)
	failN(th, "2001:db8::ffff:2", 2)
	if th.blocked("2001:db8::3") == 0 || th.blocked("2001:db8:0:1::1") != 0 {
		t.Fatal("IPv6 /64 bucketing")
	}
	// The wait runs from the last failure, and ends.
	c.advance(40 * time.Second)
	if w := th.blocked("10.1.2.9"); w != 20*time.Second {
		t.Fatalf("wait %v, want 20s", w)
	}
	c.advance(20 * time.Second)
	if th.blocked("10.1.2.9") != 0 {
		t.Fatal("still blocked a window after the last failure")
	}
}

// TestThrottleSprayDoesNotReset: a spray of failures from more networks than
// the table holds (more than the 100,000 at which the old table was
// cleared) does not let a refused source guess again before its time.
func TestThrottleSprayDoesNotReset(t *testing.T) {
	c := &clock{time.Unix(1e9, 0)}
	th := newTestThrottle(c)
	failN(th, "203.0.113.5", 5)
	if th.blocked("203.0.113.5") == 0 {
		t.Fatal("not blocked after 5 failures")
	}
	for i := range 120_000 {
		th.fail(spray(i))
		if i%10_000 == 0 {
			c.advance(time.Second)
		}
	}
	if w := th.blocked("203.0.113.5"); w <= 0 {
		t.Fatal("a spray of failures from other networks unblocked the source")
	}
	if n := len(th.nets); n > th.cap {
		t.Fatalf("table holds %d networks, cap %d", n, th.cap)
	}
	// The spray itself is now refused: from networks not in the full table,
	// past the global limit.
	if w := th.blocked(spray(200_000)); w <= 0 {
		t.Fatal("new networks may still fail freely after a spray filled the table")
	}
	// Its window ends like any other.
	c.advance(time.Minute)
	if th.blocked("203.0.113.5") != 0 || th.blocked(spray(200_000)) != 0 {
		t.Fatal("still blocked a window after the spray stopped")
	}
}

// TestThrottleEvictsOldestOpenNetwork: a full table makes room by evicting
// the network whose last failure is oldest among those not refused; it is
// never cleared, and refused networks stay.
func TestThrottleEvictsOldestOpenNetwork(t *testing.T) {
	c := &clock{time.Unix(1e9, 0)}
	th := newTestThrottle(c)
	th.cap, th.globalMax = 3, 2
	failN(th, "10.0.1.1", 5) // refused
	c.advance(time.Second)
	failN(th, "10.0.2.1", 4) // open, older
	c.advance(time.Second)
	failN(th, "10.0.3.1", 1) // open, newer
	c.advance(time.Second)
	th.fail("10.0.4.1") // full: evicts 10.0.2.0/24
	if _, ok := th.nets["10.0.2.0/24"]; ok || len(th.nets) != 3 {
		t.Fatalf("table %v", th.nets)
	}
	if th.blocked("10.0.1.1") == 0 {
		t.Fatal("the refused network was evicted")
	}
	// Only refused networks left: new ones count in the global bucket only.
	failN(th, "10.0.3.1", 4)
	failN(th, "10.0.4.1", 4)
	th.ok("10.0.9.1") // an operator authenticated from here
	th.fail("10.0.5.1")
	if len(th.nets) != 3 || th.blocked("10.0.6.1") == 0 {
		t.Fatalf("global limit not applied: table %d, overflow %+v", len(th.nets), th.overflow)
	}
	if th.blocked("10.0.9.200") != 0 {
		t.Fatal("a network that authenticated recently is refused by the global limit")
	}
}

func BenchmarkThrottleFail(b *testing.B) {
	th := newThrottle(5, time.Minute)
	i := 0
	for b.Loop() {
		th.fail(spray(i % 200_000))
		th.blocked(spray((i + 7) % 200_000))
		i++
	}
}
