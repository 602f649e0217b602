package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// reopen opens the Log at path, closed when the test ends.
func reopen(t *testing.T, path string) *Log {
	t.Helper()
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func spoolEvents(n int) []*Event {
	es := make([]*Event, n)
	for i := range es {
		e := ev(i)
		es[i] = &e
	}
	return es
}

// What a killed process had spooled and not appended is appended at the
// next open, once, marked, with the time it was spooled; what it had
// appended is not appended again; the spool is empty afterwards.
func TestSpoolRecoversWhatTheLogLacks(t *testing.T) {
	dir := t.TempDir()
	logPath, spoolPath := filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.spool")
	l, err := Open(logPath, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, n, err := OpenSpool(t.Context(), spoolPath, l, SpoolOptions{})
	if err != nil || n != 0 {
		t.Fatalf("OpenSpool on nothing: %d, %v", n, err)
	}
	es := spoolEvents(3)
	spooledAt := time.Date(2026, 12, 2, 6, 0, 0, 123456789, time.UTC)
	if ok, _, err := s.Add(es, spooledAt); err != nil || !ok[0] || !ok[1] || !ok[2] {
		t.Fatalf("Add: %v %v", ok, err)
	}
	// The process appended the second record, and was killed: the file
	// and the spool are left as they are.
	if _, err := l.Append(t.Context(), *es[1]); err != nil {
		t.Fatal(err)
	}
	l.Close()
	s.Close()

	l = reopen(t, logPath)
	s, n, err = OpenSpool(t.Context(), spoolPath, l, SpoolOptions{})
	if err != nil || n != 2 {
		t.Fatalf("OpenSpool after a kill: recovered %d, %v; want 2", n, err)
	}
	defer s.Close()
	all, err := l.Query(t.Context(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 {
		t.Fatalf("%d records after recovery, want 3: %+v", len(all), all)
	}
	for i, want := range []int{1, 0, 2} {
		e := all[i]
		if e.Action != es[want].Action || e.Details["version"] != es[want].Details["version"] || !e.Time.Equal(spooledAt) {
			t.Fatalf("record %d = %+v, want spooled record %d at %v", i, e, want, spooledAt)
		}
		if recovered := e.Details[SpoolRecovered] == "spool"; recovered != (i > 0) {
			t.Fatalf("record %d marked recovered: %v", i, recovered)
		}
	}
	for _, p := range []string{spoolPath, spoolPath + ".1"} {
		if fi, err := os.Stat(p); err != nil || fi.Size() != 0 {
			t.Fatalf("spool after recovery: %v, %v", fi, err)
		}
	}
	if _, err := verifyFile(t, logPath, nil); err != nil {
		t.Fatal(err)
	}

	// Nothing is appended twice: a third open finds nothing.
	l.Close()
	s.Close()
	l = reopen(t, logPath)
	s2, n, err := OpenSpool(t.Context(), spoolPath, l, SpoolOptions{})
	if err != nil || n != 0 {
		t.Fatalf("OpenSpool again: recovered %d, %v", n, err)
	}
	s2.Close()
}

// Each of the spool's files empties itself once every record written to
// it is in the Log; past spoolRotate bytes the spool moves on to its other
// file if that one is empty, so a flow that never stops keeps it small.
func TestSpoolEmptiesAndRotates(t *testing.T) {
	l, path := openTemp(t)
	spoolPath := filepath.Join(filepath.Dir(path), "audit.spool")
	s, _, err := OpenSpool(t.Context(), spoolPath, l, SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	add := func(es []*Event) uint64 {
		t.Helper()
		_, gen, err := s.Add(es, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return gen
	}
	g := add(spoolEvents(2))
	add(spoolEvents(1))
	s.Sealed(g, 2)
	if size(spoolPath) == 0 {
		t.Fatal("spool emptied with a record not yet in the Log")
	}
	s.Sealed(g, 1)
	if size(spoolPath) != 0 {
		t.Fatalf("spool holds %d bytes once all its records are in the Log", size(spoolPath))
	}

	// A record the spool could not encode is not counted as held.
	bad := &Event{Actor: "agent:a", Action: "delivery.send", Result: ResultOK, Details: map[string]string{"x": strings.Repeat("y", MaxRecordSize)}}
	ok, g, err := s.Add([]*Event{bad, spoolEvents(1)[0]}, time.Now())
	if err == nil || ok[0] || !ok[1] {
		t.Fatalf("Add of an oversized record: %v, %v", ok, err)
	}
	s.Sealed(g, 1)
	if size(spoolPath) != 0 {
		t.Fatal("spool not emptied once the record it held was sealed")
	}

	// A steady flow: one record always on its way.
	big := spoolEvents(1)[0]
	big.Details["pad"] = strings.Repeat("p", 60<<10)
	var gens []uint64
	for range spoolRotate/(60<<10) + 2 {
		e := *big
		e.Time = time.Time{}
		gens = append(gens, add([]*Event{&e}))
	}
	first, last := gens[0], gens[len(gens)-1]
	if last != first+1 {
		t.Fatalf("generations %d..%d over %d bytes, want the next one once past %d", first, last, len(gens)*(60<<10), spoolRotate)
	}
	for _, g := range gens {
		if g == first {
			s.Sealed(g, 1)
		}
	}
	if size(spoolPath) != 0 && size(spoolPath+".1") != 0 {
		t.Fatal("the full file was not emptied once its records were in the Log")
	}
	for _, g := range gens {
		if g == last {
			s.Sealed(g, 1)
		}
	}
	if size(spoolPath) != 0 || size(spoolPath+".1") != 0 {
		t.Fatalf("spool files hold %d and %d bytes once all are in the Log", size(spoolPath), size(spoolPath+".1"))
	}
	s.Sealed(first, 1) // a generation no file holds: ignored
}

// A torn last line (a write cut short) is ignored; a file that is not a
// spool is refused, and left as it is, as is one others may read.
func TestOpenSpoolRefusesBadFiles(t *testing.T) {
	l, path := openTemp(t)
	dir := filepath.Dir(path)
	var good bytes.Buffer
	e := ev(1)
	e.Time = time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	b, err := appendCanonical(nil, &e, nil)
	if err != nil {
		t.Fatal(err)
	}
	good.Write(b)
	good.WriteByte('\n')

	torn := filepath.Join(dir, "torn.spool")
	if err := os.WriteFile(torn, append(good.Bytes(), good.Bytes()[:40]...), 0o600); err != nil {
		t.Fatal(err)
	}
	s, n, err := OpenSpool(t.Context(), torn, l, SpoolOptions{})
	if err != nil || n != 1 {
		t.Fatalf("torn spool: recovered %d, %v; want 1", n, err)
	}
	s.Close()

	for name, c := range map[string]struct {
		body string
		mode os.FileMode
		want string
	}{
		"garbage":    {"not json\n", 0o600, "line 1: not a record"},
		"sealed":     {`{"seq":3,"time":"2026-12-02T00:00:00Z","actor":"a","action":"b","result":"ok","prev":"","hash":"ab"}` + "\n", 0o600, "a sealed record"},
		"incomplete": {`{"time":"2026-12-02T00:00:00Z","actor":"a","result":"ok"}` + "\n", 0o600, "missing"},
		"unknown":    {`{"time":"2026-12-02T00:00:00Z","actor":"a","action":"b","result":"ok","value":"x"}` + "\n", 0o600, "unknown field"},
		"readable":   {good.String(), 0o644, "others may read"},
	} {
		p := filepath.Join(dir, name+".spool")
		if err := os.WriteFile(p, []byte(c.body), c.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, c.mode); err != nil {
			t.Fatal(err)
		}
		if _, _, err := OpenSpool(t.Context(), p, l, SpoolOptions{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: OpenSpool = %v, want an error with %q", name, err, c.want)
		}
		if got, _ := os.ReadFile(p); string(got) != c.body {
			t.Fatalf("%s: the refused spool was changed", name)
		}
	}
}

func FuzzParseSpool(f *testing.F) {
	e := ev(2)
	e.Time = time.Date(2026, 12, 2, 0, 0, 0, 5, time.UTC)
	b, _ := appendCanonical(nil, &e, nil)
	f.Add(append(b, '\n'))
	f.Add([]byte("{}\n{\n"))
	f.Add([]byte(`{"time":"2026-12-02T00:00:00Z","actor":"a","action":"b","result":"ok"}` + "\n"))
	f.Add([]byte("@1764720000000000005 " + base64.RawStdEncoding.EncodeToString(testPack(nil, &e)) + "\n"))
	f.Add([]byte("@-5 YQ\n@12 !!\n@7\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// With a key, lines must carry its MAC: whatever the input, no
		// panic, and nothing without a valid MAC.
		if es, err := parseSpool(bytes.NewReader(data), hmac.New(sha256.New, make([]byte, KeySize)), testUnpack); err == nil && len(es) > 0 && !bytes.Contains(data, []byte("\n#")) {
			t.Fatalf("records without MACs accepted with a key: %+v", es)
		}
		es, err := parseSpool(bytes.NewReader(data), nil, testUnpack)
		if err != nil {
			return
		}
		for _, e := range es {
			if e.Time.IsZero() || e.Actor == "" || e.Action == "" || e.Result == "" || e.Details == nil || e.Hash != "" {
				t.Fatalf("parsed an incomplete record: %+v", e)
			}
			// What a spool holds can be written to one again.
			if _, err := appendCanonical(nil, &e, nil); err != nil && e.Time.Location() == time.UTC {
				t.Fatalf("a parsed record does not encode: %v", err)
			}
		}
	})
}

// With an audit key every write to the spool ends in its MAC: records
// written into the spool by someone without the key (who can write the
// data dir but not read the store) are not appended with a valid MAC,
// whether they come with a wrong MAC (refused) or none (ignored, as a
// write cut short is); the spool's own records are recovered.
func TestSpoolWritesCarryMACs(t *testing.T) {
	dir := t.TempDir()
	logPath, spoolPath := filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.spool")
	an := &memAnchor{}
	l, err := Open(logPath, Options{Anchor: an})
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := OpenSpool(t.Context(), spoolPath, l, SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Add(spoolEvents(2), time.Now()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	l.Close()
	spooled, err := os.ReadFile(spoolPath)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSuffix(string(spooled), "\n"), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[2], "#") {
		t.Fatalf("one write of two records, want them and its MAC: %q", spooled)
	}

	forged := ev(9)
	forged.Time = time.Now().UTC()
	b, _ := appendCanonical(nil, &forged, nil)
	recoverWith := func(body []byte) (int, error) {
		t.Helper()
		if err := os.WriteFile(spoolPath, body, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := Open(logPath, Options{Anchor: an})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		s, n, err := OpenSpool(t.Context(), spoolPath, l, SpoolOptions{})
		if err == nil {
			s.Close()
		}
		return n, err
	}
	wrong := []byte(string(spooled) + string(b) + "\n#" + strings.Repeat("ab", 32) + "\n")
	if _, err := recoverWith(wrong); err == nil || !strings.Contains(err.Error(), "line 5: wrong MAC") {
		t.Fatalf("a forged record with a wrong MAC: OpenSpool = %v, want line 5 refused", err)
	}
	if got, _ := os.ReadFile(spoolPath); !bytes.Equal(got, wrong) {
		t.Fatal("the refused spool was changed")
	}
	// Without a MAC: ignored; the spool's own two are recovered, once.
	if n, err := recoverWith([]byte(string(spooled) + string(b) + "\n")); err != nil || n != 2 {
		t.Fatalf("a forged record without a MAC: recovered %d, %v; want the spool's own 2", n, err)
	}
	l = reopen(t, logPath)
	all, err := l.Query(t.Context(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 {
		t.Fatalf("%d records in the trail, want the spool's 2: %+v", len(all), all)
	}
	for _, e := range all {
		if e.Details["version"] == forged.Details["version"] {
			t.Fatalf("the forged record was appended: %+v", e)
		}
	}
}

// While the Log takes nothing (a trail that fails), the spool keeps every
// record: it moves on to its other file once, while that one is empty, and
// then grows past its rotation size rather than empty a file whose records
// are not in the Log; the next open appends them all.
func TestSpoolKeepsWhatTheLogNeverTook(t *testing.T) {
	l, path := openTemp(t)
	spoolPath := filepath.Join(filepath.Dir(path), "audit.spool")
	s, _, err := OpenSpool(t.Context(), spoolPath, l, SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const n = spoolRotate/(60<<10) + 10
	for i := range n {
		e := spoolEvents(1)[0]
		e.Details["n"] = strconv.Itoa(i)
		e.Details["pad"] = strings.Repeat("p", 60<<10)
		if ok, _, err := s.Add([]*Event{e}, time.Now()); err != nil || !ok[0] {
			t.Fatalf("Add %d: %v %v", i, ok, err)
		}
	}
	s.Close()
	var size int64
	for _, p := range []string{spoolPath, spoolPath + ".1"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		size += fi.Size()
	}
	if size < n*60<<10 {
		t.Fatalf("spool files hold %d bytes; want all %d records in them", size, n)
	}
	l.Close()
	l = reopen(t, path)
	s, got, err := OpenSpool(t.Context(), spoolPath, l, SpoolOptions{})
	if err != nil || got != n {
		t.Fatalf("OpenSpool: recovered %d, %v; want %d", got, err, n)
	}
	s.Close()
}

// A failed write (a full disk, an I/O error) is reported, leaves the
// records the caller's, and fails every later write too: a spool that
// lost one write cannot say which records it holds.
func TestSpoolWriteFailureIsLasting(t *testing.T) {
	l, path := openTemp(t)
	s, _, err := OpenSpool(t.Context(), filepath.Join(filepath.Dir(path), "audit.spool"), l, SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.files[0].f.Close() // what a write to a failed disk sees: an error
	for i := range 2 {
		ok, _, err := s.Add(spoolEvents(2), time.Now())
		if err == nil || ok[0] || ok[1] {
			t.Fatalf("Add %d on a failed file: %v, %v", i, ok, err)
		}
		if !strings.Contains(err.Error(), "audit spool") || !strings.Contains(err.Error(), "write") {
			t.Fatalf("Add %d: error %q does not say what failed", i, err)
		}
	}
	s.Sealed(0, 2) // nothing held: ignored
}

// AddFunc encodes each record before it asks for the next: one Event,
// and its Details map, refilled for each record, spools every record as
// it was when handed over.
func TestSpoolAddFuncTakesAReusedEvent(t *testing.T) {
	dir := t.TempDir()
	logPath, spoolPath := filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.spool")
	l, err := Open(logPath, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := OpenSpool(t.Context(), spoolPath, l, SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := spoolEvents(4)
	want[2].Details["pod"] = "web-0" // a detail the next record lacks
	var e Event
	e.Details = map[string]string{}
	at := time.Date(2026, 12, 3, 9, 0, 0, 5, time.UTC)
	ok, _, err := s.AddFunc(len(want), func(i int) *Event {
		d := e.Details
		clear(d)
		e = *want[i]
		e.Details = d
		for k, v := range want[i].Details {
			d[k] = v
		}
		return &e
	}, at)
	if err != nil || !slices.Equal(ok, []bool{true, true, true, true}) {
		t.Fatalf("AddFunc: %v %v", ok, err)
	}
	l.Close()
	s.Close()

	l = reopen(t, logPath)
	s, n, err := OpenSpool(t.Context(), spoolPath, l, SpoolOptions{})
	if err != nil || n != len(want) {
		t.Fatalf("OpenSpool: recovered %d, %v; want %d", n, err, len(want))
	}
	defer s.Close()
	got, err := l.Query(t.Context(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		delete(got[i].Details, SpoolRecovered)
		if got[i].Action != w.Action || !maps.Equal(got[i].Details, w.Details) || !got[i].Time.Equal(at) {
			t.Errorf("record %d: %s %v at %v, want %s %v at %v", i, got[i].Action, got[i].Details, got[i].Time, w.Action, w.Details, at)
		}
	}
}

// testPack and testUnpack are a caller's own encoding of a record, as
// AddPacked takes and SpoolOptions.Unpack reads back: the Event's fields
// and details, each followed by a zero byte.
func testPack(buf []byte, e *Event) []byte {
	for _, f := range []string{e.Actor, e.Action, e.Object, e.Result, e.Source} {
		buf = append(append(buf, f...), 0)
	}
	for _, k := range slices.Sorted(maps.Keys(e.Details)) {
		buf = append(append(buf, k...), 0)
		buf = append(append(buf, e.Details[k]...), 0)
	}
	return buf
}

func testUnpack(p []byte) (Event, error) {
	f := strings.Split(string(p), "\x00")
	if len(f) < 6 || f[len(f)-1] != "" || (len(f)-6)%2 != 0 {
		return Event{}, errors.New("not a test record")
	}
	e := Event{Actor: f[0], Action: f[1], Object: f[2], Result: f[3], Source: f[4], Details: map[string]string{}}
	for i := 5; i+1 < len(f); i += 2 {
		e.Details[f[i]] = f[i+1]
	}
	return e, nil
}

// Records handed over packed (AddPacked), among others handed over as
// Events in the same write, are in the spool when the process is killed
// and appended by the next OpenSpool, read back by its Unpack, with the
// time they were spooled at and the same content; with an audit key
// their write carries its MAC like any other.
func TestSpoolPackedRecordsRecovered(t *testing.T) {
	for _, keyed := range []bool{false, true} {
		dir := t.TempDir()
		logPath, spoolPath := filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.spool")
		var opts Options
		an := &memAnchor{}
		if keyed {
			opts.Anchor = an
		}
		l, err := Open(logPath, opts)
		if err != nil {
			t.Fatal(err)
		}
		s, _, err := OpenSpool(t.Context(), spoolPath, l, SpoolOptions{Unpack: testUnpack})
		if err != nil {
			t.Fatal(err)
		}
		want := spoolEvents(5)
		want[1].Details["pod"] = "web-0"
		at := time.Date(2026, 12, 3, 9, 0, 0, 7, time.UTC)
		ok, _, err := s.AddPacked(len(want), func(i int, buf []byte) (*Event, []byte) {
			if i == 3 {
				return want[i], nil // an Event among the packed
			}
			return nil, testPack(buf, want[i])
		}, at)
		if err != nil || !slices.Equal(ok, []bool{true, true, true, true, true}) {
			t.Fatalf("AddPacked: %v %v", ok, err)
		}
		raw, _ := os.ReadFile(spoolPath)
		if c := bytes.Count(raw, []byte("\n@")) + bytes.Count(raw[:1], []byte("@")); c != 4 {
			t.Fatalf("%d packed lines in the spool, want 4:\n%s", c, raw)
		}
		if keyed != bytes.Contains(raw, []byte("\n#")) {
			t.Fatalf("keyed %v: the write's MAC line present: %v", keyed, !keyed)
		}
		l.Close() // killed: nothing appended
		s.Close()

		// Without a reader for them, packed records keep the server from
		// starting, and the spool is left as it was.
		l = reopenWith(t, logPath, opts)
		if _, _, err := OpenSpool(t.Context(), spoolPath, l, SpoolOptions{}); err == nil || !strings.Contains(err.Error(), "packed record") {
			t.Fatalf("keyed %v: OpenSpool without Unpack = %v, want a packed record refused", keyed, err)
		}
		if got, _ := os.ReadFile(spoolPath); !bytes.Equal(got, raw) {
			t.Fatalf("keyed %v: the refused spool was changed", keyed)
		}
		s, n, err := OpenSpool(t.Context(), spoolPath, l, SpoolOptions{Unpack: testUnpack})
		if err != nil || n != len(want) {
			t.Fatalf("keyed %v: OpenSpool: recovered %d, %v; want %d", keyed, n, err, len(want))
		}
		got, err := l.Query(t.Context(), Filter{})
		if err != nil || len(got) != len(want) {
			t.Fatalf("keyed %v: %d records in the trail, %v; want %d", keyed, len(got), err, len(want))
		}
		for i, w := range want {
			if got[i].Details[SpoolRecovered] != "spool" {
				t.Errorf("keyed %v: record %d not marked recovered", keyed, i)
			}
			delete(got[i].Details, SpoolRecovered)
			wt := w.Time
			if wt.IsZero() || i != 3 {
				wt = at
			}
			if got[i].Action != w.Action || got[i].Actor != w.Actor || got[i].Object != w.Object ||
				!maps.Equal(got[i].Details, w.Details) || !got[i].Time.Equal(wt) {
				t.Errorf("keyed %v: record %d: %+v, want %+v at %v", keyed, i, got[i], *w, wt)
			}
		}
		s.Close()
		l.Close()
	}
}

// A packed record's line that is not one (no time, a time that is not a
// count of nanoseconds, bytes that are not base64, bytes the reader
// refuses, a record without an actor) is refused with its line named.
func TestSpoolRefusesBadPackedLines(t *testing.T) {
	good := base64.RawStdEncoding.EncodeToString(testPack(nil, &Event{Actor: "a", Action: "b", Result: "ok"}))
	for body, want := range map[string]string{
		"@" + good + "\n":    "without its time",
		"@x " + good + "\n":  "not a positive count",
		"@-1 " + good + "\n": "not a positive count",
		"@5 ***\n":           "not base64",
		"@5 " + base64.RawStdEncoding.EncodeToString([]byte("junk")) + "\n":                                   "not a test record",
		"@5 " + base64.RawStdEncoding.EncodeToString(testPack(nil, &Event{Action: "b", Result: "ok"})) + "\n": "actor",
	} {
		_, err := parseSpool(strings.NewReader("@5 "+good+"\n"+body), nil, testUnpack)
		if err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: parseSpool = %v, want line 2 refused with %q", body, err, want)
		}
	}
}

// reopenWith opens the Log at path with opts, closed when the test ends.
func reopenWith(t *testing.T, path string, opts Options) *Log {
	t.Helper()
	l, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
