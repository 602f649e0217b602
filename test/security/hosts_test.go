package security_test

import (
	"testing"

	"coffer/test/security/hostile"
)

// A stolen agent key used to receive every label-bound secret in the
// system: it only had to report an invented container with the right
// labels. A binding with a host selector now reaches only agents whose
// admin-set labels match, whatever their containers claim, and an agent
// cannot change its labels (they are in its fleet record and certificate).
func TestHostSelectorBoundsAStolenAgentKey(t *testing.T) {
	srv, admin := start(t)
	admin.PutSecret(t, "prod/db", []byte("prod-"+t.Name()))
	admin.Bind(t, "prod-db", map[string]any{"secret": "prod/db", "selector": "app=db", "hosts": "env=prod"})

	join := func(labels map[string]string) string {
		return admin.NewToken(t, map[string]any{"role": "agent", "agent_labels": labels})
	}
	dev := hostile.Enroll(t, srv, "dev-1", join(map[string]string{"env": "dev"}))
	prod := hostile.Enroll(t, srv, "prod-1", join(map[string]string{"env": "prod"}))

	ds := dev.Dial(t)
	// The dev host's key invents containers claiming everything it can.
	for id, labels := range map[string]map[string]string{
		"d1": {"app": "db"},
		"d2": {"app": "db", "env": "prod"},
	} {
		if err := ds.Report(hostile.Container(id, labels)); err != nil {
			t.Fatal(err)
		}
	}
	ps := prod.Dial(t)
	if err := ps.Report(hostile.Container("p1", map[string]string{"app": "db"})); err != nil {
		t.Fatal(err)
	}
	ps.WaitFiles("p1", "db=prod/db@1")
	ds.WaitFiles("d1", "")
	ds.WaitFiles("d2", "")
	if got := ds.Received(); len(got) != 0 {
		t.Fatalf("the dev host's key received %v", got)
	}
}
