package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/test/testkit"
)

// memAnchor is an Anchor in memory. With lose set, Saves succeed but are
// not kept: what a crash between the file's fsync and the store's commit
// leaves behind. With fail set, Saves fail.
type memAnchor struct {
	mu    sync.Mutex
	key   []byte
	mark  Mark
	has   bool
	saves int
	lose  bool
	fail  error
}

func (a *memAnchor) Load(context.Context) ([]byte, Mark, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.has {
		return nil, Mark{}, ErrNotAnchored
	}
	return append([]byte(nil), a.key...), a.mark, nil
}

func (a *memAnchor) Save(_ context.Context, key []byte, m Mark) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return a.fail
	}
	a.saves++
	if a.lose {
		return nil
	}
	if key != nil {
		if a.key != nil {
			return errors.New("key replaced")
		}
		a.key = append([]byte(nil), key...)
	}
	if a.key == nil {
		return errors.New("mark without a key")
	}
	a.mark, a.has = m, true
	return nil
}

func (a *memAnchor) state() (Mark, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mark, a.saves
}

// anchoredLog opens path with an, appends n records and closes it; it
// returns the head.
func anchoredLog(t *testing.T, path string, an Anchor, n int) Head {
	t.Helper()
	l, err := Open(path, Options{Anchor: an})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := l.Append(context.Background(), ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	h := l.Head()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return h
}

func fileLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	return lines[:len(lines)-1]
}

// rewrite re-chains lines with plain recomputed hashes and no MACs, changing
// each record's actor from seq from on: a forger who knows the format but
// not the key.
func rewrite(t *testing.T, lines []string, from uint64) (string, Head) {
	t.Helper()
	var out strings.Builder
	var h Head
	for _, l := range lines {
		e := decode(t, l)
		if e.Seq < from {
			out.WriteString(l)
			h = Head{e.Seq, e.Hash}
			continue
		}
		e.Prev, e.MAC, e.Actor = h.Hash, "", "token:someone-else"
		r := reseal(t, e)
		out.WriteString(r)
		h = Head{e.Seq, decode(t, r).Hash}
	}
	return out.String(), h
}

func TestAnchorFirstOpenCreatesKeyAndMACsEveryRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	an := &memAnchor{}
	l, err := Open(path, Options{Anchor: an})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if m, saves := an.state(); saves != 1 || len(an.key) != KeySize || m.Head != (Head{}) || m.MACFrom != 1 {
		t.Fatalf("first open: mark %+v after %d saves, key of %d bytes", m, saves, len(an.key))
	}
	ctx := context.Background()
	e, err := l.Append(ctx, ev(1))
	if err != nil {
		t.Fatal(err)
	}
	if len(e.MAC) != 64 || e.MAC != recordMAC(an.key, e.Hash) {
		t.Fatalf("record MAC %q", e.MAC)
	}
	if m, _ := an.state(); m.Head != l.Head() || m.MAC != markMAC(an.key, m) {
		t.Fatalf("mark %+v, head %+v", m, l.Head())
	}
	if _, err := l.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// The file says nothing of the key.
	if data, _ := os.ReadFile(path); bytes.Contains(data, an.key) || strings.Contains(string(data), fmt.Sprintf("%x", an.key)) {
		t.Fatal("the key is in the trail")
	}
}

// TestAnchorOneSavePerCommit: the Anchor is written at most once per group
// commit (groups written while a Save runs share the next one), not once
// per record, and ends at the head.
func TestAnchorOneSavePerCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	an := &memAnchor{}
	l, err := Open(path, Options{Anchor: an})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var writes int
	write := l.write
	l.write = func(b []byte) (int, error) { writes++; return write(b) }
	_, before := an.state()
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			if _, err := l.Append(context.Background(), ev(i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	m, after := an.state()
	if saves := after - before; saves < 1 || saves > writes || m.Head != l.Head() || m.Seq != 200 {
		t.Fatalf("%d saves for %d group writes of 200 records; mark %+v", saves, writes, m)
	}
	t.Logf("200 records: %d group commits, %d anchor saves", writes, after-before)
}

// TestAnchorCutTailIsRefused: records cut from the end while no Log had the
// file open are noticed at Open, which changes nothing.
func TestAnchorCutTailIsRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	an := &memAnchor{}
	head := anchoredLog(t, path, an, 6)
	lines := fileLines(t, path)
	cut := strings.Join(lines[:4], "")
	if err := os.WriteFile(path, []byte(cut), 0o600); err != nil {
		t.Fatal(err)
	}
	mark, saves := an.state()
	_, err := Open(path, Options{Anchor: an})
	if !errors.Is(err, ErrBehind) {
		t.Fatalf("Open of a cut trail: %v", err)
	}
	e4 := decode(t, lines[3])
	for _, want := range []string{path, "ends at seq 4 (hash " + e4.Hash + ")", fmt.Sprintf("anchors seq 6 hash %s", head.Hash), "nothing was changed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\ndoes not say %q", err, want)
		}
	}
	if got, _ := os.ReadFile(path); string(got) != cut {
		t.Error("Open changed the file")
	}
	if m, s := an.state(); m != mark || s != saves {
		t.Error("Open changed the anchor")
	}
	// Without an Anchor the cut goes unnoticed: what the Anchor is for.
	if l, err := Open(path, Options{}); err != nil {
		t.Fatal(err)
	} else {
		l.Close()
	}

	// A removed file is refused too, and not created again.
	os.Remove(path)
	if _, err := Open(path, Options{Anchor: an}); !errors.Is(err, ErrBehind) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Open of a removed trail: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("Open created the removed file again")
	}
}

// TestAnchorRewriteIsCaught: a trail rewritten in full with a correct plain
// hash chain is refused at Open and fails online and keyed verification:
// the forger has no key for the MACs.
func TestAnchorRewriteIsCaught(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	an := &memAnchor{}
	anchoredLog(t, path, an, 6)
	lines := fileLines(t, path)
	forged, forgedHead := rewrite(t, lines, 1)

	// Unkeyed, the forgery is a perfect chain, even against its own head.
	if h, err := Verify(strings.NewReader(forged), &forgedHead); err != nil || h != forgedHead {
		t.Fatalf("plain verify of the forgery: %v", err)
	}
	// Keyed, it is not, even with the forger's head.
	_, err := VerifyWith(strings.NewReader(forged), VerifyOptions{Key: an.key, MACFrom: 1, End: &forgedHead})
	if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "line 1 (seq 1): no MAC") {
		t.Fatalf("keyed verify of the forgery: %v", err)
	}
	// Forged MACs (copied from the real records) do not match either.
	var withMACs strings.Builder
	for i, l := range strings.SplitAfter(forged, "\n")[:6] {
		e := decode(t, l)
		e.MAC = decode(t, lines[i]).MAC
		b, _ := canonical(&e)
		withMACs.Write(line(b, e.Hash, e.MAC))
	}
	_, err = VerifyWith(strings.NewReader(withMACs.String()), VerifyOptions{Key: an.key, MACFrom: 1})
	if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "line 1 (seq 1): MAC mismatch") {
		t.Fatalf("keyed verify of forged MACs: %v", err)
	}

	// At Open.
	os.WriteFile(path, []byte(forged), 0o600)
	if _, err := Open(path, Options{Anchor: an}); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "no MAC") {
		t.Fatalf("Open of the forgery: %v", err)
	}
	// The forger also rewrites the anchored head, without the key.
	an.mark.Head = forgedHead
	if _, err := Open(path, Options{Anchor: an}); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "fails its MAC") {
		t.Fatalf("Open with a forged mark: %v", err)
	}
	if got, _ := os.ReadFile(path); string(got) != forged {
		t.Fatal("Open changed the file")
	}

	// Online: the file is rewritten under a running Log.
	path2 := filepath.Join(dir, "audit2.log")
	an2 := &memAnchor{}
	l, err := Open(path2, Options{Anchor: an2})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 6 {
		if _, err := l.Append(context.Background(), ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	forged2, _ := rewrite(t, fileLines(t, path2), 3)
	if err := os.WriteFile(path2, []byte(forged2), 0o600); err != nil { // same inode, same length
		t.Fatal(err)
	}
	if _, err := l.Verify(context.Background(), nil); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "line 3 (seq 3): no MAC") {
		t.Fatalf("online verify of a rewritten trail: %v", err)
	}
}

// TestAnchorFileAheadIsReanchored: a crash after a commit's fsync but
// before its Mark was saved leaves the file ahead of the Anchor; Open
// accepts it and saves the new head.
func TestAnchorFileAheadIsReanchored(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	an := &memAnchor{}
	l, err := Open(path, Options{Anchor: an})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 3 {
		l.Append(ctx, ev(i))
	}
	an.mu.Lock()
	an.lose = true // the "crash": these commits reach the file, not the store
	an.mu.Unlock()
	for i := range 2 {
		if _, err := l.Append(ctx, ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	head := l.Head()
	l.Close()
	an.lose = false
	if m, _ := an.state(); m.Seq != 3 {
		t.Fatalf("mark %+v, want seq 3", m)
	}
	data, _ := os.ReadFile(path)

	logs := &testkit.Buffer{}
	l, err = Open(path, Options{Anchor: an, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatalf("Open of a file ahead of its anchor: %v", err)
	}
	if m, _ := an.state(); m.Head != head || l.Head() != head {
		t.Fatalf("re-anchored at %+v, head %+v, want %+v", m, l.Head(), head)
	}
	if !strings.Contains(logs.String(), "re-anchored") {
		t.Errorf("no log of the re-anchoring: %s", logs)
	}
	if e, err := l.Append(ctx, ev(9)); err != nil || e.Seq != 6 {
		t.Fatalf("append after re-anchoring: %+v, %v", e, err)
	}
	l.Close()

	// But records appended after the anchored head by someone without the
	// key are not "a crash": they are refused.
	lines := strings.SplitAfter(string(data), "\n")[:5]
	an2 := &memAnchor{has: true, key: an.key}
	e3 := decode(t, lines[2])
	an2.mark = sealMark(an.key, Head{3, e3.Hash}, 1)
	forged, _ := rewrite(t, lines, 4)
	os.WriteFile(path, []byte(forged), 0o600)
	if _, err := Open(path, Options{Anchor: an2}); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "line 4 (seq 4): no MAC") {
		t.Fatalf("Open of forged records after the anchored head: %v", err)
	}
	// Nor is a file whose record at the anchored seq is another one.
	forged, _ = rewrite(t, lines, 3)
	os.WriteFile(path, []byte(forged), 0o600)
	if _, err := Open(path, Options{Anchor: an2}); !errors.Is(err, ErrTampered) {
		t.Fatalf("Open of a file with another record at the anchored seq: %v", err)
	}
}

// TestAnchorMigratesAnOldTrail: a trail written before anchoring keeps its
// records as they are; its head is anchored at the first Open, and records
// carry MACs from then on. Stripping them again is caught.
func TestAnchorMigratesAnOldTrail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	old := anchoredLog(t, path, nil, 3) // no Anchor: as before this change
	an := &memAnchor{}
	logs := &testkit.Buffer{}
	l, err := Open(path, Options{Anchor: an, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := an.state(); m.Head != old || m.MACFrom != 4 {
		t.Fatalf("migrated mark %+v, want head %+v and MACs from 4", m, old)
	}
	if !strings.Contains(logs.String(), "predates MACs") {
		t.Errorf("migration not logged: %s", logs)
	}
	for i := range 3 {
		if e, err := l.Append(context.Background(), ev(i)); err != nil || e.MAC == "" {
			t.Fatalf("append after migration: %+v, %v", e, err)
		}
	}
	if _, err := l.Verify(context.Background(), &old); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if l, err := Open(path, Options{Anchor: an}); err != nil {
		t.Fatal(err)
	} else {
		l.Close()
	}
	lines := fileLines(t, path)
	if decode(t, lines[2]).MAC != "" || decode(t, lines[3]).MAC == "" {
		t.Fatal("MACs in the wrong records")
	}
	// Records after the migration with MACs stripped and hashes recomputed.
	forged, _ := rewrite(t, lines, 5)
	os.WriteFile(path, []byte(forged), 0o600)
	if _, err := Open(path, Options{Anchor: an}); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "line 5 (seq 5): no MAC") {
		t.Fatalf("stripped MACs: %v", err)
	}
	// Even offline, without the key: a record without a MAC after records with one.
	if _, err := Verify(strings.NewReader(forged), nil); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "records from seq 4 on carry one") {
		t.Fatalf("offline verify of stripped MACs: %v", err)
	}
	// A trail with MACs but an Anchor that lost its key and head.
	os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600)
	if _, err := Open(path, Options{Anchor: &memAnchor{}}); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "no audit key") {
		t.Fatalf("MACs without a key: %v", err)
	}
}

// TestAnchorSaveFailureFailsTheLog: a Mark that cannot be saved fails the
// group's appends and every later one, like a failed fsync; the records
// are in the file, which the next Open re-anchors.
func TestAnchorSaveFailureFailsTheLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	an := &memAnchor{}
	l, err := Open(path, Options{Anchor: an})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l.Append(ctx, ev(1))
	boom := errors.New("store on fire")
	an.mu.Lock()
	an.fail = boom
	an.mu.Unlock()
	if _, err := l.Append(ctx, ev(2)); !errors.Is(err, ErrFailed) || !errors.Is(err, boom) {
		t.Fatalf("Append with a failing anchor: %v", err)
	}
	if _, err := l.Append(ctx, ev(3)); !errors.Is(err, ErrFailed) {
		t.Fatalf("later Append: %v", err)
	}
	l.Close()
	an.fail = nil
	l, err = Open(path, Options{Anchor: an})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if m, _ := an.state(); m.Seq != 2 || l.Head().Seq != 2 {
		t.Fatalf("after reopen: mark %+v, head %+v", m, l.Head())
	}
}

func TestAnchorEditedMarkIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	an := &memAnchor{}
	anchoredLog(t, path, an, 4)
	for name, edit := range map[string]func(*Mark){
		"lower seq":      func(m *Mark) { m.Seq = 2 },
		"later mac_from": func(m *Mark) { m.MACFrom = 99 },
		"no mac":         func(m *Mark) { m.MAC = "" },
	} {
		t.Run(name, func(t *testing.T) {
			a := &memAnchor{has: true, key: an.key, mark: an.mark}
			edit(&a.mark)
			if _, err := Open(path, Options{Anchor: a}); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "fails its MAC") {
				t.Fatalf("Open: %v", err)
			}
		})
	}
}

// TestReanchorAcceptsALossAndRecordsIt: with Reanchor, a cut or removed
// trail is accepted, and the loss is the next record.
func TestReanchorAcceptsALossAndRecordsIt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	an := &memAnchor{}
	head := anchoredLog(t, path, an, 6)
	lines := fileLines(t, path)
	os.WriteFile(path, []byte(strings.Join(lines[:4], "")), 0o600)
	l, err := Open(path, Options{Anchor: an, Reanchor: true})
	if err != nil {
		t.Fatal(err)
	}
	evs, _ := l.Query(context.Background(), Filter{Action: "audit.reanchor"})
	if len(evs) != 1 || evs[0].Seq != 5 || evs[0].Details["anchored_seq"] != "6" || evs[0].Details["anchored_hash"] != head.Hash || evs[0].Details["found_seq"] != "4" {
		t.Fatalf("reanchor record: %+v", evs)
	}
	if m, _ := an.state(); m.Head != l.Head() {
		t.Fatalf("mark %+v, head %+v", m, l.Head())
	}
	if _, err := l.Verify(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	l.Close()

	// A removed file: a new trail.
	os.Rename(path, path+".evidence")
	l, err = Open(path, Options{Anchor: an, Reanchor: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if h := l.Head(); h.Seq != 1 {
		t.Fatalf("new trail head %+v", h)
	}
	if _, err := l.Verify(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	// A forged trail is not accepted, Reanchor or not.
	l.Close()
	forged, _ := rewrite(t, lines, 1)
	os.WriteFile(path, []byte(forged), 0o600)
	if _, err := Open(path, Options{Anchor: an, Reanchor: true}); !errors.Is(err, ErrTampered) {
		t.Fatalf("Reanchor of a forgery: %v", err)
	}
}

// TestVerifyThroughHead: an exported head passes on the intact trail and
// fails on a cut one or one rewritten up to it.
func TestVerifyThroughHead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	an := &memAnchor{}
	l, err := Open(path, Options{Anchor: an})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	for i := range 4 {
		l.Append(ctx, ev(i))
	}
	exported := l.Head() // coffer audit head, kept elsewhere
	for i := range 3 {
		l.Append(ctx, ev(i))
	}
	if h, err := l.Verify(ctx, &exported); err != nil || h.Seq != 7 {
		t.Fatalf("online verify through an old head: %+v, %v", h, err)
	}
	data, _ := os.ReadFile(path)
	if _, err := VerifyWith(bytes.NewReader(data), VerifyOptions{Through: &exported}); err != nil {
		t.Fatalf("offline verify through an old head: %v", err)
	}
	lines := fileLines(t, path)
	tests := []struct {
		name, trail, msg string
	}{
		{"cut before the head", strings.Join(lines[:3], ""), "chain ends at seq 3, before the given head 4:"},
		{"emptied", "", "chain ends at seq 0, before the given head"},
		{"rewritten up to the head", func() string { s, _ := rewrite(t, lines, 1); return s }(), "line 4 (seq 4): hash "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := VerifyWith(strings.NewReader(tt.trail), VerifyOptions{Through: &exported})
			if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("verify: %v, want %q", err, tt.msg)
			}
		})
	}
	future := Head{Seq: 99, Hash: exported.Hash}
	if _, err := l.Verify(ctx, &future); !errors.Is(err, ErrTampered) {
		t.Fatalf("online verify through a head it never had: %v", err)
	}
}

func TestParseHead(t *testing.T) {
	h := Head{Seq: 42, Hash: strings.Repeat("ab", 32)}
	for _, in := range []string{h.String(), " " + h.String() + "\n", `{"seq":42,"hash":"` + h.Hash + `"}`, "42:" + strings.ToUpper(h.Hash), `{"seq": 42, "hash": "` + h.Hash + "\"}\n"} {
		if got, err := ParseHead(in); err != nil || got != h {
			t.Errorf("ParseHead(%q) = %+v, %v", in, got, err)
		}
	}
	for in, msg := range map[string]string{
		"":                                    "want SEQ:HASH",
		"42":                                  "want SEQ:HASH",
		"0:" + h.Hash:                         "seq must be at least 1",
		"-1:" + h.Hash:                        "seq \"-1\"",
		"042:" + h.Hash:                       "seq \"042\"",
		"42:" + h.Hash[:63]:                   "64 hex digits",
		"42:" + h.Hash[:63] + "g":             "64 hex digits",
		`{"seq":42}`:                          "64 hex digits",
		`{"seq":42,"hash":"x","more":1}`:      "unknown field",
		`{"seq":42,"hash":"` + h.Hash + `"}x`: "after the JSON",
	} {
		if _, err := ParseHead(in); !errors.Is(err, ErrBadHead) || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseHead(%q) = %v, want %q", in, err, msg)
		}
	}
}

// FuzzParseHead: never panics; what it accepts prints back to itself.
func FuzzParseHead(f *testing.F) {
	h := Head{Seq: 7, Hash: strings.Repeat("0f", 32)}
	f.Add(h.String())
	f.Add(`{"seq":7,"hash":"` + h.Hash + `"}`)
	f.Add("1:")
	f.Add("{")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseHead(in)
		if err != nil {
			if !errors.Is(err, ErrBadHead) {
				t.Fatalf("error %v is not ErrBadHead", err)
			}
			return
		}
		if again, err := ParseHead(got.String()); err != nil || again != got {
			t.Fatalf("%+v does not round-trip: %+v, %v", got, again, err)
		}
	})
}

// checkingAnchor checks, at each Save, that the file already holds the
// Mark's head: the Anchor is never ahead of the file. Its Saves are slow, so
// that the committer writes further groups meanwhile.
type checkingAnchor struct {
	memAnchor
	t    *testing.T
	path string
}

func (a *checkingAnchor) Save(ctx context.Context, key []byte, m Mark) error {
	data, err := os.ReadFile(a.path)
	if err != nil {
		return err
	}
	// The committer may be writing the next group meanwhile, and a reader
	// can see part of a write: only the whole lines count.
	data = data[:bytes.LastIndexByte(data, '\n')+1]
	if _, err := VerifyWith(bytes.NewReader(data), VerifyOptions{Through: &m.Head}); err != nil {
		a.t.Errorf("Save of %+v before the file holds it: %v", m.Head, err)
	}
	time.Sleep(2 * time.Millisecond)
	return a.memAnchor.Save(ctx, key, m)
}

func TestAnchorNeverAheadOfTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	an := &checkingAnchor{t: t, path: path}
	l, err := Open(path, Options{Anchor: an})
	if err != nil {
		t.Fatal(err)
	}
	var writes int
	write := l.write
	l.write = func(b []byte) (int, error) { writes++; return write(b) }
	var wg sync.WaitGroup
	for w := range 40 {
		wg.Go(func() {
			for i := range 25 {
				if _, err := l.Append(context.Background(), ev(w*25+i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	head := l.Head()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	m, saves := an.state()
	if m.Head != head || head.Seq != 1000 || saves-1 > writes {
		t.Fatalf("mark %+v, head %+v; %d saves for %d group writes", m, head, saves-1, writes)
	}
	t.Logf("1000 records: %d group writes, %d anchor saves", writes, saves-1)
}
