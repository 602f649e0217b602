package audit

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

// trail returns the lines (with newlines) of a fresh 6-record trail and its head.
func trail(t *testing.T) ([]string, Head) {
	t.Helper()
	l, path := openTemp(t)
	for i := range 6 {
		if _, err := l.Append(context.Background(), ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	head := l.Head()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	return lines[:len(lines)-1], head
}

// reseal re-encodes a decoded, altered record with a correct hash over its
// (possibly wrong) prev: what a forger who knows the format would write.
func reseal(t *testing.T, e Event) string {
	t.Helper()
	e.Hash = ""
	b, err := canonical(&e)
	if err != nil {
		t.Fatal(err)
	}
	return string(line(b, chainHash(e.Prev, b), ""))
}

func decode(t *testing.T, l string) Event {
	t.Helper()
	var e Event
	if err := json.Unmarshal([]byte(l), &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestVerifyDetectsTampering(t *testing.T) {
	lines, head := trail(t)
	join := func(ls ...string) string { return strings.Join(ls, "") }
	cut := func(i int) []string { return append(append([]string{}, lines[:i]...), lines[i+1:]...) }

	edited := strings.Replace(lines[2], `"result":"ok"`, `"result":"denied"`, 1)
	reformatted := strings.Replace(lines[2], `"actor":`, `"actor" :`, 1)
	extraField := strings.Replace(lines[2], `"seq":3,`, `"seq":3,"note":"x",`, 1)
	swapped := append([]string{}, lines...)
	swapped[2], swapped[3] = swapped[3], swapped[2]

	// A forged record: fields changed and hash recomputed, but it cannot
	// know the next record's expectations, so the chain breaks after it.
	forgedMid := decode(t, lines[2])
	forgedMid.Actor = "token:innocent"
	// A forged record appended at the end with a recomputed hash and a wrong prev.
	forgedTail := decode(t, lines[5])
	forgedTail.Seq = 7
	forgedTail.Prev = strings.Repeat("0", 64)
	// A record inserted with the right prev but a repeated seq.
	inserted := decode(t, lines[3])
	inserted.Seq, inserted.Prev, inserted.Actor = 3, decode(t, lines[1]).Hash, "token:ghost"
	// The whole chain rewritten from record 3 on (hashes all recomputed)
	// passes on its own; only the head kept elsewhere catches it.
	rewritten := append([]string{}, lines[:2]...)
	prev := decode(t, lines[1]).Hash
	var rewrittenHead Head
	for _, l := range lines[2:] {
		e := decode(t, l)
		e.Prev, e.Actor = prev, "token:someone-else"
		r := reseal(t, e)
		rewritten = append(rewritten, r)
		prev = decode(t, r).Hash
		rewrittenHead = Head{Seq: e.Seq, Hash: prev}
	}

	tests := []struct {
		name  string
		input string
		want  *Head
		err   error
		msg   string
	}{
		{"intact", join(lines...), &head, nil, ""},
		{"intact without head", join(lines...), nil, nil, ""},
		{"empty", "", nil, nil, ""},
		{"edit a middle field", join(lines[0], lines[1], edited, lines[3], lines[4], lines[5]), nil,
			ErrTampered, "line 3 (seq 3): hash mismatch: the record was edited"},
		{"reformat a middle line", join(lines[0], lines[1], reformatted, lines[3], lines[4], lines[5]), nil,
			ErrTampered, "line 3 (seq 3): hash mismatch: the record was edited"},
		{"add an unknown field", join(lines[0], lines[1], extraField, lines[3], lines[4], lines[5]), nil,
			ErrTampered, `line 3 (seq 3): not a record: json: unknown field "note"`},
		{"delete a middle record", join(cut(3)...), nil,
			ErrTampered, "line 4 (seq 5): seq 5 follows seq 3: records removed or reordered"},
		{"delete the first record", join(cut(0)...), nil,
			ErrTampered, "line 1 (seq 2): the chain starts at seq 2, not 1: records removed from the start"},
		{"swap two records", join(swapped...), nil,
			ErrTampered, "line 3 (seq 4): seq 4 follows seq 2: records removed or reordered"},
		{"truncate the tail, with head", join(lines[:4]...), &head,
			ErrTampered, "chain ends at seq 4, want seq 6: records removed from the end"},
		{"delete everything, with head", "", &head,
			ErrTampered, "chain ends at seq 0, want seq 6"},
		{"append a forged record with wrong prev", join(lines...) + reseal(t, forgedTail), nil,
			ErrTampered, "line 7 (seq 7): prev does not match the hash of the record before"},
		{"forge a middle record, hash recomputed", join(lines[0], lines[1], reseal(t, forgedMid), lines[3], lines[4], lines[5]), nil,
			ErrTampered, "line 4 (seq 4): prev does not match the hash of the record before"},
		{"insert a record", join(lines[0], lines[1], reseal(t, inserted), lines[2], lines[3], lines[4], lines[5]), nil,
			ErrTampered, "line 4 (seq 3): seq 3 follows seq 3: record inserted, repeated or reordered"},
		{"duplicate a record", join(lines[0], lines[1], lines[1], lines[2]), nil,
			ErrTampered, "line 3 (seq 2): seq 2 follows seq 2: record inserted, repeated or reordered"},
		{"rewrite the tail, no head", join(rewritten...), nil, nil, ""},
		{"rewrite the tail, with head", join(rewritten...), &head,
			ErrTampered, "chain ends at seq 6 hash"},
		{"torn last line", join(lines[:5]...) + lines[5][:30], nil,
			ErrTorn, "line 6: 30 bytes without a final newline"},
		{"blank line", join(lines[0], "\n", lines[1]), nil, ErrTampered, "line 2: not a record"},
		{"huge line", join(lines[0]) + strings.Repeat("x", MaxRecordSize+10) + "\n", nil, ErrTampered, "line 2: line longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := Verify(strings.NewReader(tt.input), tt.want)
			if tt.err == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if tt.want != nil && h != *tt.want {
					t.Fatalf("head %+v, want %+v", h, *tt.want)
				}
				return
			}
			if !errors.Is(err, tt.err) {
				t.Fatalf("Verify = %v, want %v", err, tt.err)
			}
			var ce *ChainError
			if !errors.As(err, &ce) {
				t.Fatalf("%T is not a *ChainError", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %q\ndoes not say %q", err, tt.msg)
			}
		})
	}
	if h, err := Verify(strings.NewReader(strings.Join(rewritten, "")), &rewrittenHead); err != nil || h != rewrittenHead {
		t.Fatalf("rewritten chain against its own head: %+v, %v", h, err)
	}
}

func TestVerifyReadError(t *testing.T) {
	boom := errors.New("boom")
	_, err := Verify(errReader{boom}, nil)
	if !errors.Is(err, boom) || errors.Is(err, ErrTampered) {
		t.Fatalf("Verify = %v", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// FuzzVerify feeds arbitrary trails to Verify: it must never panic, and a
// trail it accepts must re-verify to the same head.
func FuzzVerify(f *testing.F) {
	dir := f.TempDir()
	l, err := Open(dir+"/a.log", Options{})
	if err != nil {
		f.Fatal(err)
	}
	for i := range 3 {
		if _, err := l.Append(context.Background(), ev(i)); err != nil {
			f.Fatal(err)
		}
	}
	l.Close()
	data, _ := os.ReadFile(dir + "/a.log")
	f.Add(data)
	f.Add([]byte(""))
	f.Add([]byte("{}\n"))
	f.Add(data[:len(data)-1])
	// A trail with MACs.
	an := &memAnchor{}
	l, err = Open(dir+"/b.log", Options{Anchor: an})
	if err != nil {
		f.Fatal(err)
	}
	for i := range 3 {
		if _, err := l.Append(context.Background(), ev(i)); err != nil {
			f.Fatal(err)
		}
	}
	l.Close()
	macd, _ := os.ReadFile(dir + "/b.log")
	f.Add(macd)
	f.Fuzz(func(t *testing.T, in []byte) {
		if _, err := VerifyWith(strings.NewReader(string(in)), VerifyOptions{Key: an.key, MACFrom: 1}); err != nil && !errors.Is(err, ErrTampered) && !errors.Is(err, ErrTorn) {
			t.Fatalf("keyed: error %v is neither ErrTampered nor ErrTorn", err)
		}
		h, err := Verify(strings.NewReader(string(in)), nil)
		if err != nil {
			if !errors.Is(err, ErrTampered) && !errors.Is(err, ErrTorn) {
				t.Fatalf("error %v is neither ErrTampered nor ErrTorn", err)
			}
			return
		}
		if h2, err := Verify(strings.NewReader(string(in)), &h); err != nil || h2 != h {
			t.Fatalf("accepted trail does not re-verify: %+v %v", h2, err)
		}
	})
}
