package security_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"coffer/internal/audit"
	"coffer/test/security/hostile"
)

// An agent suddenly reports hundreds of new containers: its reports are
// delayed (its stream is read at the rate limit), not dropped, so every
// container still gets its state; the episode is audited once and the
// counts show in `coffer agent ls`.
func TestReportFloodIsLimitedAndVisible(t *testing.T) {
	srv, admin := start(t)
	admin.PutSecret(t, "app/db", []byte("flood-value"))
	admin.Bind(t, "db", map[string]any{"secret": "app/db", "selector": "app=web"})
	s := enroll(t, srv, admin, "flooder").Dial(t)
	const n = 360 // the burst is 300, then 30 a second: about 2 s of delay
	start := time.Now()
	for i := range n {
		if err := s.Report(hostile.Container(fmt.Sprint("f", i), map[string]string{"app": "web"})); err != nil {
			t.Fatal(err)
		}
	}
	// The bucket refills at 30 a second while the reports go out: on a
	// loaded machine sending them takes a while, and that many more pass.
	refilled := int(30*time.Since(start).Seconds()) + 1
	for i := range n {
		s.WaitFiles(fmt.Sprint("f", i), "db=app/db@1")
	}
	if d := time.Since(start); d < time.Second {
		t.Fatalf("%d reports were all handled in %v: not limited", n, d)
	}
	a := admin.Agents(t)["flooder"]
	if a.ReportsLimited < uint64(max(n-300-refilled, 1)) || a.LastAnomalyReason != "report_rate" || a.Containers != n {
		t.Fatalf("agent listing: %+v", a)
	}
	admin.WaitAudit(t, "agent.anomaly", 1, func(e audit.Event) bool { return e.Actor == "agent:flooder" })
	time.Sleep(200 * time.Millisecond) // a second record, if there were one, would be in by now
	if recs := admin.Audit(t, "agent.anomaly", func(e audit.Event) bool { return e.Actor == "agent:flooder" }); len(recs) != 1 ||
		recs[0].Details["reason"] != "report_rate" {
		t.Fatalf("anomaly records: %+v", recs)
	}
	if out := srv.MustCLI(t, "", "agent", "ls"); !strings.Contains(out, "reports_limited=") {
		t.Fatalf("agent ls:\n%s", out)
	}
}
