package security_test

import (
	"strings"
	"testing"

	"coffer/internal/audit"
	"coffer/test/security/hostile"
)

// A stolen agent key reports the id of a container another agent runs. The
// report is refused: the container stays with its agent, so a rotation
// and a revocation still reach it; the thief gets nothing; the attempt is
// audited and shows in `coffer agent ls`.
func TestStolenAgentCannotTakeOverAContainer(t *testing.T) {
	srv, admin := start(t)
	admin.PutSecret(t, "app/db", []byte("takeover-v1"))
	admin.Bind(t, "db", map[string]any{"secret": "app/db", "selector": "app=web"})
	web := map[string]string{"app": "web"}

	victim := enroll(t, srv, admin, "victim").Dial(t)
	if err := victim.Report(hostile.Container("c-victim", web)); err != nil {
		t.Fatal(err)
	}
	victim.WaitFiles("c-victim", "db=app/db@1")
	victim.Ack("c-victim")

	thief := enroll(t, srv, admin, "thief").Dial(t)
	thief.Report(hostile.Container("c-victim", web))
	thief.Report(hostile.Container("c-thief", nil)) // handled after the one above
	thief.WaitFiles("c-thief", "")
	if got, ok := thief.Files("c-victim"); ok {
		t.Fatalf("the thief was sent the victim's container state %q", got)
	}

	admin.PutSecret(t, "app/db", []byte("takeover-v2"))
	victim.WaitFiles("c-victim", "db=app/db@2")
	admin.Must(t, "DELETE", "/v1/bindings/db", nil, nil)
	victim.WaitFiles("c-victim", "")
	if got := thief.Received(); len(got) != 0 {
		t.Fatalf("the thief received %v", got)
	}

	admin.WaitAudit(t, "agent.anomaly", 1, func(e audit.Event) bool {
		return e.Actor == "agent:thief" && e.Details["reason"] == "container_id_conflict" &&
			e.Details["container_id"] == "c-victim" && e.Details["held_by"] == "victim"
	})
	if a := admin.Agents(t)["thief"]; a.IDConflicts != 1 || a.LastAnomalyReason != "container_id_conflict" {
		t.Fatalf("agent listing of the thief: %+v", a)
	}
	if a := admin.Agents(t)["victim"]; a.IDConflicts != 0 || !a.LastAnomaly.IsZero() {
		t.Fatalf("agent listing of the victim: %+v", a)
	}
	out := srv.MustCLI(t, "", "agent", "ls")
	if !strings.Contains(out, "ANOMALIES") || !strings.Contains(out, "id_conflicts=1") {
		t.Fatalf("agent ls:\n%s", out)
	}
}
