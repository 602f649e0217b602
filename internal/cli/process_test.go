package cli

import (
	"testing"

	"coffer/internal/policy"
)

// What secret show, rollout status and bind ls say of a holder's process.
func TestProcessDisplay(t *testing.T) {
	for _, tc := range []struct {
		h     holder
		note  string
		holds bool // holds version 2 (and at least 2)
	}{
		{holder{Version: 2}, "", true},
		{holder{Version: 2, Process: &holderProcess{2, "current"}}, ", process v2", true},
		{holder{Version: 2, Pending: true, Rotation: "restart-process", Process: &holderProcess{1, "restart-pending"}},
			", file v2 but process still on v1 (restart pending)", false},
		{holder{Version: 2, Pending: true, Process: &holderProcess{0, "restart-pending"}},
			", file v2 but process still on an older version (restart pending)", false},
		{holder{Version: 2, Process: &holderProcess{1, "stale"}},
			", file v2 but process on v1 for life (coffer exec without --restart-on-change: restart the container)", true},
	} {
		if got := processNote(tc.h); got != tc.note {
			t.Errorf("processNote(%+v) = %q, want %q", tc.h, got, tc.note)
		}
		if holds(tc.h, 2, false) != tc.holds || holds(tc.h, 2, true) != tc.holds {
			t.Errorf("holds(%+v) = %v, want %v", tc.h, !tc.holds, tc.holds)
		}
	}
	pending := map[string]int{"a": 2, "b": 1, "c": 0}
	for _, tc := range []struct {
		b    binding
		want string
	}{
		{binding{Binding: policy.Binding{Secret: "a", Rotation: "restart-process"}}, "restart-process (2 restarts pending)"},
		{binding{Binding: policy.Binding{Secret: "b", Rotation: "restart-process"}}, "restart-process (1 restart pending)"},
		{binding{Binding: policy.Binding{Secret: "c", Rotation: "restart-process"}}, "restart-process"},
		{binding{Binding: policy.Binding{Secret: "a"}}, "file"},
	} {
		if got := rotationCell(tc.b, pending); got != tc.want {
			t.Errorf("rotationCell(%+v) = %q, want %q", tc.b, got, tc.want)
		}
	}
}
