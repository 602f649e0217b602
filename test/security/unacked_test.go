package security_test

import (
	"encoding/json"
	"strings"
	"testing"

	"coffer/internal/audit"
	"coffer/test/security/hostile"
)

// A hostile agent never acknowledges what it is sent. The audit trail
// records what it was sent all the same (delivery.send: agent, container,
// image digest, secret, version, file), and never the value.
func TestUnacknowledgedDeliveryIsAudited(t *testing.T) {
	srv, admin := start(t)
	admin.PutSecret(t, "app/db", []byte("unacked-value-1"))
	admin.Bind(t, "db", map[string]any{"secret": "app/db", "selector": "app=web"})
	s := enroll(t, srv, admin, "silent").Dial(t)
	c := hostile.Container("c1", map[string]string{"app": "web"})
	s.Report(c)
	s.WaitFiles("c1", "db=app/db@1")
	admin.PutSecret(t, "app/db", []byte("unacked-value-2"))
	s.WaitFiles("c1", "db=app/db@2")

	for _, version := range []string{"1", "2"} {
		admin.WaitAudit(t, "delivery.send", 1, func(e audit.Event) bool {
			d := e.Details
			return e.Actor == "agent:silent" && e.Result == "ok" && d["agent"] == "silent" && d["container_id"] == "c1" &&
				d["container"] == c.Name && d["image_digest"] == c.ImageDigest && d["secret"] == "app/db" &&
				d["version"] == version && d["file"] == "db"
		})
	}
	if acks := admin.Audit(t, "delivery.apply", nil); len(acks) != 0 {
		t.Fatalf("%d apply records without an acknowledgement", len(acks))
	}
	all, _ := json.Marshal(admin.Audit(t, "", nil))
	if strings.Contains(string(all), "unacked-value") {
		t.Fatal("a secret value is in the audit trail")
	}
}
