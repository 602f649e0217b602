package broker

import (
	"bytes"
	"errors"
	"log/slog"
	"maps"
	"os"
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

// AddPacked keeps each record as an Event: a packed one read back with
// UnpackRecord, as the next start reads it from a real spool.
func (s *fakeSpool) AddPacked(n int, record func(int, []byte) (*audit.Event, []byte), now time.Time) ([]bool, uint64, error) {
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
		e, packed := record(i, nil)
		if e == nil {
			u, err := UnpackRecord(packed)
			if err != nil {
				panic(err)
			}
			e = &u
		}
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

func (s *failingSpool) AddPacked(n int, _ func(int, []byte) (*audit.Event, []byte), _ time.Time) ([]bool, uint64, error) {
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
	sp, _, err := audit.OpenSpool(b.Context(), filepath.Join(dir, "audit.spool"), l, audit.SpoolOptions{Unpack: UnpackRecord})
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

// A delivery record is spooled packed and read back, by the next start's
// UnpackRecord from a real spool file, as the very Event the trail would
// have had of it: a pod's details, a failure's reason, text a hostile
// agent made too long (clipped once, as the trail has it), none of it
// changed or lost.
func TestSpooledDeliveryReadBack(t *testing.T) {
	dir := t.TempDir()
	logPath, spoolPath := filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.spool")
	l, err := audit.Open(logPath, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sp, _, err := audit.OpenSpool(t.Context(), spoolPath, l, audit.SpoolOptions{Unpack: UnpackRecord})
	if err != nil {
		t.Fatal(err)
	}
	b := New(Config{Audit: &recAuditor{}, Spool: sp})
	long := strings.Repeat("é", 400) // 800 bytes: clipped
	pod := &cofferv1.Container{Id: "c1", Name: long, Image: "web:1", ImageDigest: "sha256:" + strings.Repeat("a", 64),
		Labels: map[string]string{LabelNamespace: "shop", LabelPod: long, LabelServiceAccount: "", "app": "web"}}
	plain := &cofferv1.Container{Id: "c2\n\x00two", Name: "db", Image: "db:2"}
	f := &cofferv1.FileRef{Secret: "app/db", Version: 1 << 40, File: "db"}
	ds := []delivery{
		{agent: "node-a", action: "delivery.send", info: pod, f: f, err: "value too large"},
		{agent: "node-b", action: "delivery.apply", info: plain, f: f},
		{agent: "node-a", action: "delivery.rotate", info: pod, f: f},
	}
	var rs []*record
	for _, d := range ds {
		r := &record{d: d}
		b.toSpool(r)
		rs = append(rs, r)
	}
	b.spoolFlush()
	want := make([]audit.Event, len(rs))
	for i, r := range rs {
		if !r.spooled {
			t.Fatalf("record %d not spooled", i)
		}
		want[i] = r.event() // what the drain would append
	}
	if err := b.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	sp.Close() // killed before the drain: the records are only in the spool
	l.Close()
	raw, _ := os.ReadFile(spoolPath)
	if bytes.Contains(raw, []byte("delivery.")) {
		t.Fatalf("delivery records spooled as JSON, not packed:\n%s", raw)
	}

	l, err = audit.Open(logPath, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sp, n, err := audit.OpenSpool(t.Context(), spoolPath, l, audit.SpoolOptions{Unpack: UnpackRecord})
	if err != nil || n != len(ds) {
		t.Fatalf("OpenSpool: recovered %d, %v; want %d", n, err, len(ds))
	}
	defer sp.Close()
	got, err := l.Query(t.Context(), audit.Filter{})
	if err != nil || len(got) != len(want) {
		t.Fatalf("%d records in the trail, %v; want %d", len(got), err, len(want))
	}
	for i, w := range want {
		delete(got[i].Details, audit.SpoolRecovered)
		g := got[i]
		if g.Actor != w.Actor || g.Action != w.Action || g.Object != w.Object || g.Result != w.Result ||
			!maps.Equal(g.Details, w.Details) || !g.Time.Equal(w.Time) {
			t.Errorf("record %d read back as %+v, want %+v", i, g, w)
		}
	}
	if got[0].Details["pod"] != clip(long) || got[0].Details["serviceaccount"] != "" || got[0].Details["error"] != "value too large" {
		t.Errorf("a pod's details read back as %v", got[0].Details)
	}
	if _, ok := got[1].Details["namespace"]; ok {
		t.Errorf("a Docker container's record read back with pod details: %v", got[1].Details)
	}
}

// UnpackRecord refuses what it cannot read back whole, naming why, and
// never panics.
func TestUnpackRecordRefusesBadInput(t *testing.T) {
	t1 := textOf("node-a", &cofferv1.Container{Id: "c1", Labels: map[string]string{LabelPod: "p"}}, "delivery.send", &cofferv1.FileRef{Secret: "s", Version: 3, File: "f"})
	good := t1.pack(nil)
	if _, err := UnpackRecord(good); err != nil {
		t.Fatalf("UnpackRecord of a packed record: %v", err)
	}
	noAgent := deliveryText{action: "delivery.send"}
	for name, c := range map[string]struct {
		p    []byte
		want string
	}{
		"empty":            {nil, "newer"},
		"another version":  {append([]byte{2}, good[1:]...), "newer"},
		"cut short":        {good[:len(good)-1], "cut short"},
		"cut in a length":  {good[:2], "cut short"},
		"more after it":    {append(slices.Clone(good), 0), "more after it"},
		"unknown pod bits": {withPodSet(good, 0x80), "does not know"},
		"no agent":         {noAgent.pack(nil), "agent or action"},
		"huge length":      {append([]byte{deliveryPacking}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), "cut short"},
	} {
		if _, err := UnpackRecord(c.p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: UnpackRecord = %v, want an error with %q", name, err, c.want)
		}
	}
}

// withPodSet returns a copy of packed record p (no pod detail set but
// the pod's) whose byte of pod details is set to bits.
func withPodSet(p []byte, bits uint8) []byte {
	q := slices.Clone(p)
	// The pod byte is followed by the pod's name "p": length 1, "p".
	q[len(q)-3] = bits
	return q
}

func FuzzUnpackRecord(f *testing.F) {
	t1 := textOf("node-a", &cofferv1.Container{Id: "c1", Name: "web", Labels: map[string]string{LabelNamespace: "ns", LabelPod: "p"}},
		"delivery.send", &cofferv1.FileRef{Secret: "s", Version: 3, File: "f"})
	t1.err = "x"
	f.Add(t1.pack(nil))
	f.Add([]byte{deliveryPacking})
	f.Fuzz(func(t *testing.T, p []byte) {
		e, err := UnpackRecord(p)
		if err != nil {
			return
		}
		if !strings.HasPrefix(e.Actor, "agent:") || e.Actor == "agent:" || e.Action == "" || e.Details == nil {
			t.Fatalf("an incomplete record read back: %+v", e)
		}
		if again, err := UnpackRecord(p); err != nil || !maps.Equal(again.Details, e.Details) {
			t.Fatalf("read back twice, differently: %v", err)
		}
	})
}
