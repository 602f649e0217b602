package broker

import (
	"bytes"
	"errors"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/audit"
	"coffer/test/testkit"
)

// fakeSpool records what is spooled; while hold is set, Add waits for it
// to be closed.
type fakeSpool struct {
	mu     sync.Mutex
	hold   chan struct{}
	added  []audit.Event
	sealed int
}

func (s *fakeSpool) AddFunc(n int, event func(int) *audit.Event, now time.Time) ([]bool, uint64, error) {
	s.mu.Lock()
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		<-hold
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ok := make([]bool, n)
	for i := range n {
		e := event(i)
		if e.Time.IsZero() {
			e.Time = now
		}
		c := *e
		c.Details = maps.Clone(e.Details) // the broker may reuse its map
		s.added = append(s.added, c)
		ok[i] = true
	}
	return ok, 7, nil
}

func (s *fakeSpool) Sealed(gen uint64, n int) {
	if gen != 7 {
		panic("sealed a generation never given")
	}
	s.mu.Lock()
	s.sealed += n
	s.mu.Unlock()
}

func (s *fakeSpool) find(action, version string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.added {
		if e.Action == action && e.Details["version"] == version {
			return true
		}
	}
	return false
}

// No value leaves before its delivery.send record is in the spool; every
// record queued for the trail goes through the spool, with the time it
// was spooled kept in the trail, and the spool is told of each one that
// reached the trail.
func TestValueLeavesOnlyOnceSpooled(t *testing.T) {
	sp := &fakeSpool{}
	r := newRig(t, func(c *Config) { c.Spool = sp }, nil)
	r.put("app/db", []byte("v1-value"))
	r.bind(binding("db", "app/db", "app=web"))
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c1", web))
	a.waitFiles("c1", "db=app/db@1")
	if !sp.find("delivery.send", "1") {
		t.Fatal("version 1 reached the agent with no delivery.send in the spool")
	}

	// While the spool's write does not return, the rotation does not
	// leave.
	hold := make(chan struct{})
	sp.mu.Lock()
	sp.hold = hold
	sp.mu.Unlock()
	r.put("app/db", []byte("v2-value"))
	time.Sleep(300 * time.Millisecond)
	if files, _ := a.files("c1"); files["db"] != "app/db@1" {
		t.Fatalf("the rotation reached the agent before its record was spooled: %v", files)
	}
	sp.mu.Lock()
	sp.hold = nil
	sp.mu.Unlock()
	close(hold)
	a.waitFiles("c1", "db=app/db@2")
	if !sp.find("delivery.send", "2") {
		t.Fatal("no delivery.send of version 2 in the spool")
	}

	gen := a.generation("c1")
	a.ack("c1", gen)
	r.waitAudit("delivery.apply", 1, nil)
	if err := r.b.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	sp.mu.Lock()
	added, sealed := len(sp.added), sp.sealed
	spooled := map[string]time.Time{}
	for _, e := range sp.added {
		spooled[e.Action+"@"+e.Details["version"]] = e.Time
	}
	sp.mu.Unlock()
	recs := append(r.aud.find("delivery.send", nil), r.aud.find("delivery.apply", nil)...)
	if len(recs) != added || sealed != added {
		t.Fatalf("%d records in the trail, %d spooled, %d told sealed: want all the same", len(recs), added, sealed)
	}
	for _, e := range recs {
		if at, ok := spooled[e.Action+"@"+e.Details["version"]]; !ok || !at.Equal(e.Time) {
			t.Fatalf("record %s v%s at %v in the trail, spooled at %v (%v)", e.Action, e.Details["version"], e.Time, at, ok)
		}
	}
	for _, e := range sp.added {
		for _, v := range e.Details {
			if bytes.Contains([]byte(v), []byte("value")) {
				t.Fatalf("a spooled record holds a value: %+v", e)
			}
		}
	}
}

// failingSpool is a spool whose every write fails, as on a full disk.
type failingSpool struct {
	mu            sync.Mutex
	adds, sealeds int
}

func (s *failingSpool) AddFunc(n int, event func(int) *audit.Event, now time.Time) ([]bool, uint64, error) {
	s.mu.Lock()
	s.adds++
	s.mu.Unlock()
	return make([]bool, n), 0, errors.New("write audit.spool: no space left on device")
}

func (s *failingSpool) Sealed(gen uint64, n int) {
	s.mu.Lock()
	s.sealeds++
	s.mu.Unlock()
}

// A spool that cannot write keeps nothing from being delivered or audited:
// the records still reach the trail (without the spool's protection
// against a kill), the failure is logged, and the spool is never told it
// can drop records it does not hold.
func TestFailingSpoolLosesNoRecord(t *testing.T) {
	sp := &failingSpool{}
	var logs testkit.Buffer
	r := newRig(t, func(c *Config) {
		c.Spool = sp
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	}, nil)
	r.put("app/db", []byte("v1-value"))
	r.bind(binding("db", "app/db", "app=web"))
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c1", web))
	a.waitFiles("c1", "db=app/db@1")
	r.put("app/db", []byte("v2-value"))
	a.waitFiles("c1", "db=app/db@2")
	a.ack("c1", a.generation("c1"))
	r.waitAudit("delivery.apply", 1, nil)
	if err := r.b.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1", "2"} {
		if len(r.aud.find("delivery.send", func(e audit.Event) bool { return e.Details["version"] == v })) != 1 {
			t.Fatalf("no delivery.send of version %s in the trail", v)
		}
	}
	sp.mu.Lock()
	adds, sealeds := sp.adds, sp.sealeds
	sp.mu.Unlock()
	if adds == 0 || sealeds != 0 {
		t.Fatalf("spool: %d writes tried, told %d times that records it does not hold were sealed", adds, sealeds)
	}
	out := logs.String()
	if !strings.Contains(out, "audit spool: records not kept against a kill") || !strings.Contains(out, "no space left on device") {
		t.Fatalf("the failure is not logged: %s", out)
	}
	if strings.Count(out, "audit spool:") != 1 {
		t.Fatalf("every failed write logged, want the first only: %s", out)
	}
	if strings.Contains(out, "-value") {
		t.Fatalf("a value in the log: %s", out)
	}
}

// The spool's write makes every delivery record into one reused Event:
// each record written is exactly the one a fresh Event is made into, with
// nothing left over from the one before (a pod's details, a failure's
// reason).
func TestSpooledRecordsShareNoDetails(t *testing.T) {
	sp := &fakeSpool{}
	b := New(Config{Audit: &recAuditor{}, Spool: sp})
	pod := &cofferv1.Container{Id: "c1", Name: "web-0", Image: "web:1", ImageDigest: "sha256:" + strings.Repeat("a", 64),
		Labels: map[string]string{LabelNamespace: "shop", LabelPod: "web-0", LabelServiceAccount: "web"}}
	plain := &cofferv1.Container{Id: "c2", Name: "db", Image: "db:2"}
	f := &cofferv1.FileRef{Secret: "app/db", Version: 3, File: "db"}
	ds := []delivery{
		{agent: "node-a", action: "delivery.send", info: pod, f: f, err: "value too large"},
		{agent: "node-b", action: "delivery.apply", info: plain, f: f},
		{agent: "node-a", action: "delivery.rotate", info: pod, f: f},
	}
	for _, d := range ds {
		b.queueDelivery(d.info.Id, d)
	}
	b.spoolFlush()
	sp.mu.Lock()
	got := slices.Clone(sp.added)
	sp.mu.Unlock()
	if len(got) != len(ds) {
		t.Fatalf("%d records spooled, want %d", len(got), len(ds))
	}
	for i, d := range ds {
		var want audit.Event // a fresh Event and map
		fillDeliveryEvent(&want, d.agent, d.info, d.action, d.f)
		if d.err != "" {
			want.Result, want.Details["error"] = audit.ResultError, d.err
		}
		if got[i].Actor != want.Actor || got[i].Action != want.Action || got[i].Object != want.Object ||
			got[i].Result != want.Result || !maps.Equal(got[i].Details, want.Details) {
			t.Errorf("record %d spooled as %+v, want %+v", i, got[i], want)
		}
		if got[i].Time.IsZero() || got[i].Time.Location() != time.UTC {
			t.Errorf("record %d spooled with time %v, want the spool's, in UTC", i, got[i].Time)
		}
	}
	if err := b.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkSpoolDelivery is the spool's write of delivery records, as a
// fan-out makes them (64 at a time), into a real spool file: what each
// delivery.send costs before its value may leave, and each
// acknowledgement's record after.
func BenchmarkSpoolDelivery(b *testing.B) {
	dir := b.TempDir()
	l, err := audit.Open(filepath.Join(dir, "audit.log"), audit.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	sp, _, err := audit.OpenSpool(b.Context(), filepath.Join(dir, "audit.spool"), l)
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	br := New(Config{Spool: sp})
	info := &cofferv1.Container{Id: "ctr-00003763", Name: "bench-3763", Image: "registry.example.com/bench/app:1.0",
		ImageDigest: "sha256:" + strings.Repeat("ab", 32)}
	f := &cofferv1.FileRef{Secret: "bench/shared", Version: 4, File: "shared"}
	const batch = 64
	rs := make([]*record, batch)
	b.ReportAllocs()
	for b.Loop() {
		for i := range rs {
			rs[i] = &record{d: delivery{agent: "bench-agent-0376", action: "delivery.send", info: info, f: f}}
		}
		br.sp.pending = append(br.sp.pending, rs...)
		br.spoolFlush()
		sp.Sealed(rs[0].spoolGen, batch) // as the drain would: the files stay small
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/record")
}
