package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

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
	s, n, err := OpenSpool(t.Context(), spoolPath, l)
	if err != nil || n != 0 {
		t.Fatalf("OpenSpool on nothing: %d, %v", n, err)
	}
	es := spoolEvents(3)
	spooledAt := time.Date(2026, 12, 2, 6, 0, 0, 123456789, time.UTC)
	if ok, err := s.Add(es, spooledAt); err != nil || !ok[0] || !ok[1] || !ok[2] {
		t.Fatalf("Add: %v %v", ok, err)
	}
	// The process appended the second record, and was killed: the file
	// and the spool are left as they are.
	if _, err := l.Append(t.Context(), *es[1]); err != nil {
		t.Fatal(err)
	}
	l.Close()
	s.Close()

	l, err = Open(logPath, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, n, err = OpenSpool(t.Context(), spoolPath, l)
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
	if fi, err := os.Stat(spoolPath); err != nil || fi.Size() != 0 {
		t.Fatalf("spool after recovery: %v, %v", fi, err)
	}
	if _, err := verifyFile(t, logPath, nil); err != nil {
		t.Fatal(err)
	}

	// Nothing is appended twice: a third open finds nothing.
	l.Close()
	s.Close()
	l, err = Open(logPath, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s2, n, err := OpenSpool(t.Context(), spoolPath, l)
	if err != nil || n != 0 {
		t.Fatalf("OpenSpool again: recovered %d, %v", n, err)
	}
	s2.Close()
}

// The spool empties itself once every record it holds is in the Log.
func TestSpoolTruncatesOnceAllAreSealed(t *testing.T) {
	l, path := openTemp(t)
	spoolPath := filepath.Join(filepath.Dir(path), "audit.spool")
	s, _, err := OpenSpool(t.Context(), spoolPath, l)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	size := func() int64 {
		fi, err := os.Stat(spoolPath)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	if _, err := s.Add(spoolEvents(2), time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(spoolEvents(1), time.Now()); err != nil {
		t.Fatal(err)
	}
	s.Sealed(2)
	if size() == 0 {
		t.Fatal("spool emptied with a record not yet in the Log")
	}
	s.Sealed(1)
	if size() != 0 {
		t.Fatalf("spool holds %d bytes once all its records are in the Log", size())
	}
	// A record the spool could not encode is not counted as held.
	bad := &Event{Actor: "agent:a", Action: "delivery.send", Result: ResultOK, Details: map[string]string{"x": strings.Repeat("y", MaxRecordSize)}}
	ok, err := s.Add([]*Event{bad, spoolEvents(1)[0]}, time.Now())
	if err == nil || ok[0] || !ok[1] {
		t.Fatalf("Add of an oversized record: %v, %v", ok, err)
	}
	s.Sealed(1)
	if size() != 0 {
		t.Fatal("spool not emptied once the record it held was sealed")
	}
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
	s, n, err := OpenSpool(t.Context(), torn, l)
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
		if _, _, err := OpenSpool(t.Context(), p, l); err == nil || !strings.Contains(err.Error(), c.want) {
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
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := ParseSpool(bytes.NewReader(data))
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
