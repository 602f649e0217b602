package broker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/audit"
	"coffer/internal/catalog"
	"coffer/test/testkit"
)

var web = map[string]string{"app": "web"}

// noValueIn fails the test if any audit record holds one of the values.
func noValueIn(t *testing.T, a *recAuditor, values ...[]byte) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.events {
		j, _ := json.Marshal(e)
		for _, v := range values {
			if bytes.Contains(j, v) {
				t.Fatalf("audit record %s holds a secret value", e.Action)
			}
		}
	}
}

// A stolen agent's key (agent B) reports the id of a container agent A
// runs. The report is refused: A keeps the container, so a rotation and a
// revocation still reach A's real container, and B gets nothing for it.
func TestReportCannotTakeOverAnotherAgentsContainer(t *testing.T) {
	r := newRig(t, nil, nil)
	r.put("app/db", []byte("v1-value"))
	r.bind(binding("db", "app/db", "app=web"))
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c1", web))
	a.waitFiles("c1", "db=app/db@1")
	a.ack("c1", a.generation("c1"))

	b := r.dial(r.enroll("node-b", nil, ""))
	b.report(ctrInfo("c1", map[string]string{"app": "web", "evil": "1"}))
	b.report(ctrInfo("b1", nil)) // B's own: its state shows B's reports were handled
	b.waitFiles("b1", "")
	if fs, ok := b.files("c1"); ok {
		t.Fatalf("agent B was sent container c1's state: %v", fs)
	}

	r.put("app/db", []byte("v2-value"))
	a.waitFiles("c1", "db=app/db@2")
	r.b.Changed(catalog.Change{Kind: catalog.SecretDeleted, Secret: "app/db"})
	a.waitFiles("c1", "")
	if got := b.received(); len(got) != 0 {
		t.Fatalf("agent B received values %v", got)
	}
	if n := r.b.Containers(); n["node-a"] != 1 || n["node-b"] != 1 {
		t.Fatalf("containers per agent = %v", n)
	}

	ev := r.waitAudit("agent.anomaly", 1, func(e audit.Event) bool { return e.Details["reason"] == ReasonIDConflict })
	if ev[0].Actor != "agent:node-b" || ev[0].Details["container_id"] != "c1" || ev[0].Details["held_by"] != "node-a" {
		t.Fatalf("anomaly record = %+v", ev[0])
	}
	if an := r.b.Anomalies()["node-b"]; an.IDConflicts != 1 || an.LastAnomalyReason != ReasonIDConflict || an.LastAnomaly.IsZero() {
		t.Fatalf("node-b anomalies = %+v", an)
	}
	if an := r.b.Anomalies()["node-a"]; an.IDConflicts != 0 {
		t.Fatalf("node-a anomalies = %+v", an)
	}
	noValueIn(t, r.aud, []byte("v1-value"), []byte("v2-value"))
}

// A hostile agent never acknowledges: what it was sent is in the audit
// trail all the same, from the moment it is queued for the stream.
func TestDeliveryIsAuditedWhenSentNotOnlyWhenAcknowledged(t *testing.T) {
	r := newRig(t, nil, nil)
	r.put("app/db", []byte("v1-value"))
	r.put("app/api", []byte("k1-value"))
	r.bind(binding("db", "app/db", "app=web"))
	r.bind(binding("api", "app/api", "app=web"))
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c1", web))
	a.waitFiles("c1", "api=app/api@1,db=app/db@1")
	sent := func(secretName string, version uint64) func(audit.Event) bool {
		return func(e audit.Event) bool {
			d := e.Details
			return e.Result == "ok" && e.Actor == "agent:node-a" && d["agent"] == "node-a" && d["container_id"] == "c1" && d["container"] == "name-c1" &&
				d["image_digest"] != "" && d["secret"] == secretName && d["version"] == fmt.Sprint(version) && d["file"] != ""
		}
	}
	r.waitAudit("delivery.send", 1, sent("app/db", 1))
	r.waitAudit("delivery.send", 1, sent("app/api", 1))

	// A rotation records the new version only: the other file was sent
	// already on this stream.
	r.put("app/db", []byte("v2-value"))
	a.waitFiles("c1", "api=app/api@1,db=app/db@2")
	r.waitAudit("delivery.send", 1, sent("app/db", 2))
	if err := r.b.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(r.aud.find("delivery.send", nil)); n != 3 {
		t.Fatalf("%d delivery.send records, want 3", n)
	}
	if n := len(r.aud.find("delivery.apply", nil)) + len(r.aud.find("delivery.rotate", nil)); n != 0 {
		t.Fatalf("%d acknowledgement records without an acknowledgement", n)
	}
	noValueIn(t, r.aud, []byte("v1-value"), []byte("v2-value"), []byte("k1-value"))
}

// A value too large for what an agent can receive is not sent to it; the
// container's other files, and the agent's other containers, still get
// theirs, and the stream stays up.
func TestValueTooLargeForTheAgentIsNotSent(t *testing.T) {
	r := newRig(t, nil, nil)
	big := bytes.Repeat([]byte("B"), 5<<20) // over gRPC's default 4 MiB
	r.put("app/big", big)
	r.put("app/small", []byte("small-value"))
	r.bind(binding("big", "app/big", "big=1"))
	r.bind(binding("small", "app/small", "app=web"))

	// An agent that announces nothing has gRPC's default limit.
	old := r.dialLimit(r.enroll("old", nil, ""), 0, cofferv1.FeaturesKey, cofferv1.FeatureBatch)
	old.report(ctrInfo("o1", map[string]string{"app": "web", "big": "1"}))
	old.report(ctrInfo("o2", web))
	old.waitFiles("o1", "small=app/small@1")
	old.waitFiles("o2", "small=app/small@1")
	fail := r.waitAudit("delivery.send", 1, func(e audit.Event) bool { return e.Result == "error" })
	if d := fail[0].Details; d["container_id"] != "o1" || d["secret"] != "app/big" || !strings.Contains(d["error"], "receive limit") {
		t.Fatalf("failed delivery record = %+v", fail[0])
	}
	if !old.open(100 * time.Millisecond) {
		t.Fatalf("old agent's stream ended: %v", old.err)
	}

	// coffer-agent announces its limit and gets the value.
	cur := r.dial(r.enroll("cur", nil, ""), cofferv1.MaxRecvKey, fmt.Sprint(cofferv1.AgentMaxRecv))
	cur.report(ctrInfo("n1", map[string]string{"app": "web", "big": "1"}))
	cur.waitFiles("n1", "big=app/big@1,small=app/small@1")

	// A small announced limit is kept to: values are chunked under it.
	lim := 256 << 10
	r.put("app/v1", bytes.Repeat([]byte("1"), 100<<10))
	r.put("app/v2", bytes.Repeat([]byte("2"), 100<<10))
	r.put("app/v3", bytes.Repeat([]byte("3"), 100<<10))
	r.put("app/v4", bytes.Repeat([]byte("4"), 300<<10))
	for _, n := range []string{"v1", "v2", "v3", "v4"} {
		r.bind(binding(n, "app/"+n, "many=1"))
	}
	for _, batch := range []bool{false, true} {
		md := []string{cofferv1.MaxRecvKey, fmt.Sprint(lim)}
		if batch {
			md = append(md, cofferv1.FeaturesKey, cofferv1.FeatureBatch)
		}
		name := fmt.Sprintf("small-%v", batch)
		s := r.dialLimit(r.enroll(name, nil, ""), lim, md...)
		for i := range 300 { // enough Desired states to need more than one message
			s.report(ctrInfo(fmt.Sprintf("%s-%d", name, i), map[string]string{"many": "1"}))
		}
		for i := range 300 {
			s.waitFiles(fmt.Sprintf("%s-%d", name, i), "v1=app/v1@1,v2=app/v2@1,v3=app/v3@1")
		}
	}
	noValueIn(t, r.aud, []byte("small-value"), big[:64])
}

// The broker never gives an agent a secret outside its scope, whatever
// labels its containers claim.
func TestAgentGetsNothingOutsideItsScope(t *testing.T) {
	r := newRig(t, nil, nil)
	r.put("team-a/db", []byte("a-value"))
	r.put("team-b/db", []byte("b-value"))
	r.put("team-ab/db", []byte("ab-value"))
	r.bind(binding("za", "team-a/db", "team=a"))
	r.bind(binding("b", "team-b/db", "team=b"))
	r.bind(binding("ab", "team-ab/db", "team=b"))
	s := r.dial(r.enroll("node-a", nil, "team-a/"))
	s.report(ctrInfo("c1", map[string]string{"team": "b"}))
	s.report(ctrInfo("c2", map[string]string{"team": "a"}))
	s.waitFiles("c1", "")
	s.waitFiles("c2", "db=team-a/db@1")
	// Also when a binding is added later, and one outside the scope that
	// would win the file (its name is smaller) does not take it away.
	r.bind(binding("b2", "team-b/db", "team=a"))
	r.put("team-a/db", []byte("a2-value"))
	s.waitFiles("c2", "db=team-a/db@2")
	if got := fmt.Sprint(s.received()); got != "[team-a/db@1 team-a/db@2]" {
		t.Fatalf("scoped agent received %s", got)
	}
	if h := r.b.Rollout("team-b/db"); len(h) != 0 {
		t.Fatalf("team-b/db holders = %+v", h)
	}
}

// An agent removed from the fleet (Host ok=false) gets nothing more, and
// its stream is closed, even before the broker is told.
func TestRemovedAgentGetsNothing(t *testing.T) {
	r := newRig(t, nil, nil)
	r.put("app/db", []byte("v1-value"))
	r.bind(binding("db", "app/db", "app=web"))
	s := r.dial(r.enroll("node-a", nil, ""))
	s.report(ctrInfo("c1", web))
	s.waitFiles("c1", "db=app/db@1")
	r.agents.remove("node-a")
	s.report(ctrInfo("c2", web))
	err := s.closed(5 * time.Second)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("stream ended with %v", err)
	}
	if _, ok := s.files("c2"); ok {
		t.Fatal("removed agent was sent a container's state")
	}
}

// An agent repeating a failure report for the state it was sent (a stolen
// key, a broken agent) gets one record and one log line for it, not one
// per message: it cannot flood the trail or the log. A failure of the
// next state is recorded again.
func TestRepeatedFailureReportIsRecordedOnce(t *testing.T) {
	var logs testkit.Buffer
	r := newRig(t, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) }, nil)
	r.put("app/db", []byte("v1-value"))
	r.bind(binding("db", "app/db", "app=web"))
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c1", web))
	a.waitFiles("c1", "db=app/db@1")
	failed := func(gen uint64, n int) {
		for i := range n {
			a.send(&cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Applied{Applied: &cofferv1.Applied{
				ContainerId: "c1", Generation: gen, Error: fmt.Sprintf("disk full %d", i)}}})
		}
	}
	isError := func(e audit.Event) bool { return e.Result == audit.ResultError }
	failed(a.generation("c1"), 200)
	r.waitAudit("delivery.apply", 1, isError)
	r.put("app/db", []byte("v2-value"))
	a.waitFiles("c1", "db=app/db@2")
	failed(a.generation("c1"), 200)
	r.waitAudit("delivery.apply", 2, isError)
	if err := r.b.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := r.aud.find("delivery.apply", isError); len(got) != 2 {
		t.Fatalf("%d failure records for 2 states reported failed 200 times each, want 2", len(got))
	}
	if n := strings.Count(logs.String(), "delivery failed"); n != 2 {
		t.Fatalf("%d log lines for the failures, want 2", n)
	}
}
