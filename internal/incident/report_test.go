package incident

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"coffer/internal/audit"
	"coffer/internal/store/bolt"
)

func at(min int) time.Time { return time.Date(2026, 12, 1, 10, min, 0, 0, time.UTC) }

func del(seq uint64, min int, action, ctr, version string) audit.Event {
	return audit.Event{Seq: seq, Time: at(min), Actor: "agent:node-1", Action: action, Object: "secret:app/db", Result: "ok",
		Details: map[string]string{"secret": "app/db", "version": version, "file": "db", "container_id": ctr, "container": "c-" + ctr, "agent": "node-1"}}
}

func TestBuildChainOfCustody(t *testing.T) {
	evs := []audit.Event{
		{Seq: 1, Time: at(0), Actor: "token:alice", Action: "secret.put", Object: "secret:app/db", Result: "ok", Details: map[string]string{"version": "1"}},
		del(2, 1, "delivery.send", "a", "1"),
		del(3, 1, "delivery.apply", "a", "1"),
		{Seq: 4, Time: at(2), Actor: "token:bob", Action: "secret.put", Object: "secret:app/db", Result: "ok", Details: map[string]string{"version": "2", "generated": "true"}},
		del(5, 2, "delivery.rotate", "a", "2"),
		del(6, 3, "delivery.apply", "b", "2"),
		{Seq: 7, Time: at(4), Actor: "token:eve", Action: "secret.put", Object: "secret:app/db", Result: "denied"},
		del(8, 5, "delivery.remove", "a", "2"),
		{Seq: 9, Time: at(5), Actor: "token:carol", Action: "secret.show", Object: "secret:app/db", Result: "ok"},
		{Seq: 10, Time: at(6), Actor: "agent:node-2", Action: "delivery.send", Object: "secret:other", Result: "ok", Details: map[string]string{"secret": "other", "agent": "node-2"}},
	}
	r := Build("app/db", evs, time.Time{}, at(10))
	if len(r.Changes) != 3 || r.Changes[0].Actor != "token:alice" || r.Changes[2].Result != "denied" {
		t.Fatalf("changes: %+v", r.Changes)
	}
	// Only alice gave it a value she knew (bob's was generated, eve was denied).
	if len(r.Writers) != 1 || r.Writers[0] != "token:alice" {
		t.Fatalf("writers: %v", r.Writers)
	}
	if len(r.Hosts) != 1 || r.Hosts[0] != "node-1" {
		t.Fatalf("hosts: %v", r.Hosts)
	}
	want := []Holding{
		{ContainerID: "a", Version: 1, From: at(1), To: at(2), Ended: "delivery.rotate", FromSeq: 3, ToSeq: 5},
		{ContainerID: "a", Version: 2, From: at(2), To: at(5), Ended: "delivery.remove", FromSeq: 5, ToSeq: 8},
		{ContainerID: "b", Version: 2, From: at(3), FromSeq: 6},
	}
	if len(r.Holdings) != len(want) {
		t.Fatalf("holdings: %+v", r.Holdings)
	}
	for i, w := range want {
		h := r.Holdings[i]
		if h.ContainerID != w.ContainerID || h.Version != w.Version || !h.From.Equal(w.From) || !h.To.Equal(w.To) || h.Ended != w.Ended || h.FromSeq != w.FromSeq || h.ToSeq != w.ToSeq {
			t.Errorf("holding %d: %+v, want %+v", i, h, w)
		}
	}
	if got := r.HeldVersion(2); len(got) != 2 {
		t.Fatalf("held version 2: %+v", got)
	}
	// A window after a's removal: only b, and no changes.
	r = Build("app/db", evs, at(6), at(10))
	if len(r.Holdings) != 1 || r.Holdings[0].ContainerID != "b" || len(r.Changes) != 0 {
		t.Fatalf("window: %+v", r)
	}
}

func TestLockdownPersists(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "c.db")
	st, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, st)
	if err != nil || s.Current() != nil {
		t.Fatalf("fresh: %v %v", s.Current(), err)
	}
	if err := s.Declare(ctx, Lockdown{Since: at(0), By: "token:admin", Reason: "leak", Freeze: true}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, err = bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, err = Open(ctx, st)
	if err != nil || s.Current() == nil || !s.Current().Freeze || s.Current().Reason != "leak" {
		t.Fatalf("reopened: %+v %v", s.Current(), err)
	}
	if prev, err := s.Lift(ctx); err != nil || prev == nil || s.Current() != nil {
		t.Fatalf("lift: %+v %v", prev, err)
	}
	if prev, err := s.Lift(ctx); err != nil || prev != nil {
		t.Fatalf("lift twice: %+v %v", prev, err)
	}
}
