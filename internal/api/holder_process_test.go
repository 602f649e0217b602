package api_test

import (
	"encoding/json"
	"testing"

	"coffer/internal/api"
	"coffer/internal/broker"
)

// A holder's process state, as GET /v1/secrets/{name} returns it, is what
// openapi.yaml's Holder schema says: every field named, the states of the
// enum only.
func TestHolderProcessMatchesTheSpec(t *testing.T) {
	doc, _, err := loadSpec()
	if err != nil {
		t.Fatal(err)
	}
	s := doc.Components.Schemas["Holder"].Value
	check := func(h broker.Holder) error {
		b, _ := json.Marshal(api.HolderView{Holder: h})
		var v any
		json.Unmarshal(b, &v)
		if extra := undocumented(s, v, "holder"); len(extra) > 0 {
			t.Fatalf("fields the schema does not name: %v", extra)
		}
		return s.VisitJSON(v)
	}
	base := broker.Holder{Agent: "node-1", ContainerID: "c1", ContainerName: "web-1", Version: 2, Pending: true, Rotation: "restart-process"}
	for _, st := range []string{broker.ProcessCurrent, broker.ProcessRestartPending, broker.ProcessStale} {
		h := base
		h.Process = &broker.ProcessState{Version: 1, State: st}
		if err := check(h); err != nil {
			t.Errorf("%s: %v", st, err)
		}
	}
	if err := check(base); err != nil {
		t.Errorf("without a process state: %v", err)
	}
	h := base
	h.Process = &broker.ProcessState{Version: 1, State: "sleeping"}
	if check(h) == nil {
		t.Error("a state outside the enum passed")
	}
}
