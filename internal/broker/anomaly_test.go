package broker

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/identity"
	"coffer/internal/policy"
	"coffer/test/testkit"
)

// `agent rm` between a stream's authentication and its registration: the
// fleet forgets the agent and the broker's Disconnect finds no session.
// The stream must see the removal when it registers, and close.
func TestStreamAuthenticatedBeforeRemovalIsClosed(t *testing.T) {
	reached, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	r := newRig(t, nil, func(b *Broker) {
		b.hookBeforeRegister = func(string) {
			once.Do(func() { close(reached); <-proceed })
		}
	})
	r.put("app/db", []byte("v1-value"))
	r.bind(binding("db", "app/db", "app=web"))
	c := r.dial(r.enroll("node-a", nil, ""))
	<-reached
	r.agents.remove("node-a") // what `agent rm` does: fleet first,
	r.b.Disconnect("node-a")  // then the broker
	close(proceed)
	if err := c.closed(5 * time.Second); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("stream ended with %v", err)
	}
	if got := r.b.Connected(); len(got) != 0 {
		t.Fatalf("connected = %v", got)
	}
	if _, ok := c.files("c1"); ok {
		t.Fatal("removed agent got a container state")
	}
}

// A flood of container reports is delayed, not dropped: every container
// gets its state, the agent's stream is read at the bucket's rate, the
// first delayed report is audited once, and the counts show in Anomalies.
// Containers that come and go are not limited.
func TestReportFloodIsDelayedAndFlaggedOnce(t *testing.T) {
	const burst, rate = 5, 20
	r := newRig(t, func(c *Config) { c.ReportBurst, c.ReportRate = burst, rate }, nil)
	r.put("app/db", []byte("v1-value"))
	r.bind(binding("db", "app/db", "app=web"))
	s := r.dial(r.enroll("node-a", nil, ""))

	// Each stopped container gives its token back.
	for i := range 6 * burst {
		id := fmt.Sprint("churn", i)
		s.report(ctrInfo(id, web))
		s.waitFiles(id, "db=app/db@1")
		s.stop(id)
	}
	if an, ok := r.b.Anomalies()["node-a"]; ok {
		t.Fatalf("start/stop churn was limited: %+v", an)
	}

	const n = 30
	start := time.Now()
	for i := range n {
		s.report(ctrInfo(fmt.Sprint("c", i), web))
	}
	for i := range n {
		s.waitFiles(fmt.Sprint("c", i), "db=app/db@1")
	}
	// The bucket cannot let n reports through in less than (n-burst)/rate.
	if d, least := time.Since(start), time.Duration(n-burst)*time.Second/rate; d < least {
		t.Fatalf("%d reports handled in %v, less than %v: not limited", n, d, least)
	}
	// How many had to wait depends on how fast they arrived; at most all
	// those over the burst.
	an := r.b.Anomalies()["node-a"]
	if an.ReportsLimited < 1 || an.ReportsLimited > n-burst || an.LastAnomalyReason != ReasonReportRate || an.IDConflicts != 0 {
		t.Fatalf("anomalies = %+v", an)
	}
	if err := r.b.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	recs := r.aud.find("agent.anomaly", nil)
	if len(recs) != 1 || recs[0].Details["reason"] != ReasonReportRate || recs[0].Actor != "agent:node-a" {
		t.Fatalf("anomaly records = %+v", recs)
	}
}

func TestBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var k bucket
	for i := range 3 {
		if w, opens := k.take(t0, 10, 3); w != 0 || opens {
			t.Fatalf("take %d within burst: wait %v, opens %v", i, w, opens)
		}
	}
	w, opens := k.take(t0, 10, 3)
	if w != 100*time.Millisecond || !opens {
		t.Fatalf("first excess: wait %v, opens %v", w, opens)
	}
	if w, opens = k.take(t0, 10, 3); w != 200*time.Millisecond || opens {
		t.Fatalf("second excess: wait %v, opens %v", w, opens)
	}
	k.give(t0, 10, 3)
	if w, opens = k.take(t0, 10, 3); w != 200*time.Millisecond || opens {
		t.Fatalf("after a stop: wait %v, opens %v", w, opens)
	}
	// Refilled in full, but less than a minute after the window opened:
	// the same window.
	t1 := t0.Add(time.Second)
	for range 3 {
		if w, opens = k.take(t1, 10, 3); w != 0 || opens {
			t.Fatalf("after a refill: wait %v, opens %v", w, opens)
		}
	}
	if _, opens = k.take(t1, 10, 3); opens {
		t.Fatal("a second window of excess within a minute")
	}
	// Full again a minute later: the window is over, the next excess is new.
	t2 := t0.Add(2 * time.Minute)
	for range 3 {
		k.take(t2, 10, 3)
	}
	if _, opens = k.take(t2, 10, 3); !opens {
		t.Fatal("a new window of excess was not flagged")
	}
	k.give(t1.Add(time.Hour), 10, 3)
	if k.tokens != 3 {
		t.Fatalf("tokens = %v, want the burst", k.tokens)
	}
}

// What the broker matches a container with: its own labels, its image's
// labels (apart), and its agent's labels from the fleet (never from the
// agent), on a report and on a binding change.
func TestTargetCarriesImageAndHostLabels(t *testing.T) {
	var mu sync.Mutex
	var got []policy.Target
	r := newRig(t, nil, func(b *Broker) {
		b.hookTarget = func(agent string, tg policy.Target) {
			mu.Lock()
			defer mu.Unlock()
			if agent == "node-eu" {
				got = append(got, tg)
			}
		}
	})
	hostLabels := map[string]string{"zone": "eu", "tier": "pci"}
	s := r.dial(r.enroll("node-eu", hostLabels, ""))
	c := ctrInfo("c1", map[string]string{"app": "web"})
	c.ImageLabels = map[string]string{"team": "x", "app": "evil"}
	s.report(c)
	s.waitFiles("c1", "")
	r.bind(binding("any", "app/any", "app=web"))
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("%d targets, want 2 (report, binding change)", len(got))
	}
	for _, tg := range got {
		if !maps.Equal(tg.Labels, c.Labels) || !maps.Equal(tg.ImageLabels, c.ImageLabels) || !maps.Equal(tg.HostLabels, hostLabels) ||
			tg.Image != c.Image || tg.ImageDigest != c.ImageDigest {
			t.Fatalf("target = %+v", tg)
		}
	}
}

// End to end with the real policy: a host selector on a binding picks
// agents by the labels an admin gave them, and image labels are seen only
// under image.label/. The policy package implements that matching on
// another branch: until it is merged this test skips (it checks that
// policy does match Binding.Hosts); after the merge it must pass.
func TestHostSelectorEndToEnd(t *testing.T) {
	probe, err := policy.NewSet([]policy.Binding{{Name: "p", Secret: "p/p", Selector: "app=web", Hosts: "zone=eu"}})
	if err != nil {
		t.Skipf("policy does not accept Binding.Hosts yet (%v): runs after the policy branch is merged", err)
	}
	if len(probe.Match(policy.Target{Labels: web, HostLabels: map[string]string{"zone": "us"}})) != 0 {
		t.Skip("policy does not match Binding.Hosts yet: runs after the policy branch is merged")
	}
	r := newRig(t, nil, nil)
	r.put("eu/db", []byte("eu-value"))
	r.put("team/db", []byte("team-value"))
	r.bind(policy.Binding{Name: "eu", Secret: "eu/db", Selector: "app=web", Hosts: "zone=eu", File: "eu"})
	r.bind(policy.Binding{Name: "team", Secret: "team/db", Selector: "image.label/team=x", Image: "**@sha256:" + strings.Repeat("a", 64), File: "team"})
	eu := r.dial(r.enroll("node-eu", map[string]string{"zone": "eu"}, ""))
	us := r.dial(r.enroll("node-us", map[string]string{"zone": "us"}, ""))
	withImage := func(id string, ctrLabels, imgLabels map[string]string) *cofferv1.Container {
		c := ctrInfo(id, ctrLabels)
		c.ImageLabels = imgLabels
		return c
	}
	eu.report(withImage("e1", web, map[string]string{"team": "x"}))
	us.report(withImage("u1", map[string]string{"app": "web", "zone": "eu"}, nil)) // a container claiming the zone
	us.report(withImage("u2", map[string]string{"team": "x"}, nil))                // a container label is not an image label
	eu.waitFiles("e1", "eu=eu/db@1,team=team/db@1")
	us.waitFiles("u1", "")
	us.waitFiles("u2", "")
}

// A stolen agent key's holder connects and stops reading, so the server's
// sends to it block on HTTP/2 flow control. Removing the agent must still
// end its stream at once: the session ends on the cancel, not when a send
// returns.
func TestRemovedAgentThatStopsReadingIsCutOff(t *testing.T) {
	var logs testkit.Buffer
	r := newRig(t, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) }, nil)
	big := make([]byte, 200<<10)
	for i := range 4 {
		name := fmt.Sprintf("app/big%d", i)
		r.put(name, big)
		r.bind(binding(fmt.Sprintf("big%d", i), name, "app=web"))
	}
	cert := r.enroll("node-a", nil, "")
	cfg, err := identity.ClientTLSConfig(r.caPEM, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil })
	if err != nil {
		t.Fatal(err)
	}
	// Fixed 64 KiB windows: no bandwidth probe grows them while nothing reads.
	conn, err := grpc.NewClient(r.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cofferv1.AgentMaxRecv)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := cofferv1.NewAgentServiceClient(conn).Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*cofferv1.AgentMessage{
		{Msg: &cofferv1.AgentMessage_Hello{Hello: &cofferv1.Hello{Version: "broker-test"}}},
		{Msg: &cofferv1.AgentMessage_Started{Started: &cofferv1.ContainerStarted{Container: ctrInfo("c1", web)}}},
	} {
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); !slices.Contains(r.b.Connected(), "node-a"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the agent never connected")
		}
	}
	// Rotations pile up far more than the windows hold: 800 KiB a round.
	for range 5 {
		for i := range 4 {
			r.put(fmt.Sprintf("app/big%d", i), big)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the sender is now stuck in a send
	r.agents.remove("node-a")
	r.b.Disconnect("node-a")
	// The stream's handler has returned (it logs as it does).
	for deadline := time.Now().Add(2 * time.Second); !strings.Contains(logs.String(), "agent disconnected"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a removed agent that stopped reading still has its stream 2 s later")
		}
	}
}
