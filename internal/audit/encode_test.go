package audit

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// jsonCanonical is the canonical encoding by its definition: json.Marshal
// of body, as every trail so far was written.
func jsonCanonical(e *Event) ([]byte, error) {
	return json.Marshal(body{
		Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action, Object: e.Object,
		Result: e.Result, Source: e.Source, Details: e.Details, Server: e.Server, Prev: e.Prev,
	})
}

// checkCanonical fails t if appendCanonical and json.Marshal disagree on e,
// in bytes or in whether it can be encoded at all.
func checkCanonical(t *testing.T, e *Event) {
	t.Helper()
	want, wantErr := jsonCanonical(e)
	keys := make([]detail, 0, 1) // scratch, reused
	prefix := []byte("xyz")
	got, err := appendCanonical(prefix, e, &keys)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("appendCanonical error %v, json.Marshal error %v", err, wantErr)
	}
	if !bytes.HasPrefix(got, prefix) {
		t.Fatalf("appendCanonical changed what dst held: %q", got)
	}
	if err == nil && !bytes.Equal(got[len(prefix):], want) {
		t.Fatalf("appendCanonical differs from json.Marshal:\n got %q\nwant %q", got[len(prefix):], want)
	}
	if len(keys) != 0 {
		t.Fatalf("scratch keys left with %d entries", len(keys))
	}
	if c, err := canonical(e); err == nil && !bytes.Equal(c, want) {
		t.Fatalf("canonical differs from json.Marshal:\n got %q\nwant %q", c, want)
	}
}

func TestCanonicalMatchesJSON(t *testing.T) {
	base := func() Event { e := deliveryEvent(); e.Seq, e.Prev = 7, strings.Repeat("ab", 32); return e }
	awkward := []string{
		"", `"`, `\`, `\"`, `a"b\c`, "\x00", "\x01\x07\x1f", "\b\f\n\r\t", "\x7f",
		"<script>&amp;</script>", "a&b<c>d", "\u2028", "\u2029", "x\u2028y\u2029z", "\u2027\u202a",
		"é", "日本語", "☃", "😀", "\uFFFD", "\U0010FFFF", "\ufeff", "a\u0085b",
		"\xff", "a\xc3", "\xe2\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "ok\xffok",
		strings.Repeat("\\\"<", 100), " ", "/", "'", "`", "}", "{", ":", ",",
	}
	tests := []struct {
		name string
		edit func(*Event)
	}{
		{"delivery record", func(*Event) {}},
		{"nil details", func(e *Event) { e.Details = nil }},
		{"empty details", func(e *Event) { e.Details = map[string]string{} }},
		{"one detail", func(e *Event) { e.Details = map[string]string{"k": "v"} }},
		{"empty key and value", func(e *Event) { e.Details = map[string]string{"": ""} }},
		{"no optional fields", func(e *Event) { e.Object, e.Source, e.Details, e.Server = "", "", nil, "" }},
		{"all fields", func(e *Event) { e.Source = "10.0.0.1:4242" }},
		{"first record", func(e *Event) { e.Seq, e.Prev = 1, "" }},
		{"max seq", func(e *Event) { e.Seq = math.MaxUint64 }},
		{"zero seq", func(e *Event) { e.Seq = 0 }},
		{"whole second", func(e *Event) { e.Time = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }},
		{"trailing zero nanos", func(e *Event) { e.Time = time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.UTC) }},
		{"one nanosecond", func(e *Event) { e.Time = time.Date(2026, 1, 2, 3, 4, 5, 1, time.UTC) }},
		{"year 1", func(e *Event) { e.Time = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"year 9999", func(e *Event) { e.Time = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC) }},
		{"year 0", func(e *Event) { e.Time = time.Date(0, 6, 1, 0, 0, 0, 0, time.UTC) }},
		{"year 10000", func(e *Event) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"negative year", func(e *Event) { e.Time = time.Date(-5, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"zero time", func(e *Event) { e.Time = time.Time{} }},
		{"monotonic reading", func(e *Event) { e.Time = time.Now().UTC() }},
		{"not UTC", func(e *Event) { e.Time = time.Date(2026, 5, 1, 12, 0, 0, 5, time.FixedZone("x", 3600)) }},
		{"local", func(e *Event) { e.Time = time.Now() }},
		{"UTC by another name", func(e *Event) { e.Time = time.Date(2026, 5, 1, 12, 0, 0, 5, time.FixedZone("UTC", 0)) }},
		{"many details", func(e *Event) {
			for i, s := range awkward {
				e.Details[s+string(rune('a'+i%26))] = s
			}
		}},
		{"keys that sort by bytes", func(e *Event) {
			e.Details = map[string]string{"a": "1", "B": "2", "é": "3", "a\x00": "4", "aa": "5", "<": "6", "\u2028": "7", "Z": "8"}
		}},
	}
	for _, s := range awkward {
		tests = append(tests, struct {
			name string
			edit func(*Event)
		}{"string " + strings.ToValidUTF8(s, "?"), func(e *Event) {
			e.Actor, e.Action, e.Object, e.Result, e.Source, e.Server, e.Prev = s, s, s, s, s, s, s
			e.Details = map[string]string{s: s, "k" + s: "v" + s + s}
		}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := base()
			tt.edit(&e)
			checkCanonical(t, &e)
			// And as Append records it.
			if p, err := prepare(e, time.Now); err == nil {
				checkCanonical(t, &p)
			}
		})
	}
}

// FuzzCanonical checks that appendCanonical writes exactly what json.Marshal
// of body writes, for any event, before and after prepare.
func FuzzCanonical(f *testing.F) {
	f.Add(uint64(33299), int64(1795624688), int64(319078259), "agent:bench-agent-0376", "delivery.rotate", "secret:bench/shared", "ok", "", "819582eeb2eae05e", strings.Repeat("fa55", 16),
		"\x05agent\x10bench-agent-0376\x07version\x014", uint8(0))
	f.Add(uint64(1), int64(0), int64(0), "a\"b\\c", "<>&", "\u2028\u2029", "\x00\x1f\x7f", "é😀", "\xff\xfe", "", "\x01<\x01>\x00\x00", uint8(1))
	f.Add(uint64(0), int64(-62135596800), int64(0), "", "", "", "", "", "", "", "", uint8(2))
	f.Add(uint64(math.MaxUint64), int64(253402300799), int64(999999999), "x", "y", "", "z", "", "", "", "\x01\u2028\x01\u2029", uint8(3))
	f.Fuzz(func(t *testing.T, seq uint64, sec, nsec int64, actor, action, object, result, source, server, prev, details string, flags uint8) {
		e := Event{
			Seq: seq, Time: time.Unix(sec, nsec).UTC(), Actor: actor, Action: action, Object: object,
			Result: result, Source: source, Server: server, Prev: prev, Details: fuzzDetails(details),
		}
		switch flags % 4 {
		case 1:
			if e.Details == nil {
				e.Details = map[string]string{} // empty, not nil
			}
		case 2:
			e.Time = time.Unix(sec, nsec) // not UTC: the fallback
		case 3:
			e.Details = nil
		}
		checkCanonical(t, &e)
		if p, err := prepare(e, time.Now); err == nil {
			checkCanonical(t, &p)
		}
	})
}

// fuzzDetails reads a Details map from s: pairs of a length byte and that
// many bytes, key then value; nil if s is empty.
func fuzzDetails(s string) map[string]string {
	if s == "" {
		return nil
	}
	d := map[string]string{}
	next := func() string {
		if s == "" {
			return ""
		}
		n := min(int(s[0]), len(s)-1)
		v := s[1 : 1+n]
		s = s[1+n:]
		return v
	}
	for s != "" {
		k := next()
		d[k] = next()
	}
	return d
}

// TestSealGolden pins two records, sealed by the code that wrote every trail
// before the hand-written encoder, byte for byte: their lines, hashes and
// MACs must never change.
func TestSealGolden(t *testing.T) {
	key := bytes.Repeat([]byte{7}, KeySize)
	e := deliveryEvent()
	e.Source = "10.0.0.1:4242"
	e.Details["note"] = "a <b> & \"c\" \\ \n\t\x01 \u2028\u2029 é ☃ 😀"
	e2 := Event{Actor: "system", Action: "audit.start", Result: "ok", Time: deliveryEvent().Time}
	tests := []struct {
		name string
		e    Event
		head Head
		key  []byte
		want string
	}{
		{"delivery record with a MAC", e, benchHead, key, "{\"seq\":33299,\"time\":\"2026-12-01T16:38:08.319078259Z\",\"actor\":\"agent:bench-agent-0376\",\"action\":\"delivery.rotate\",\"object\":\"secret:bench/shared\",\"result\":\"ok\",\"source\":\"10.0.0.1:4242\",\"details\":{\"agent\":\"bench-agent-0376\",\"container\":\"bench-3763\",\"container_id\":\"ctr-00003763\",\"file\":\"shared\",\"image\":\"registry.example.com/bench/app:1.0\",\"image_digest\":\"sha256:abababababababababababababababababababababababababababababababab\",\"note\":\"a \\u003cb\\u003e \\u0026 \\\"c\\\" \\\\ \\n\\t\\u0001 \\u2028\\u2029 é ☃ 😀\",\"secret\":\"bench/shared\",\"version\":\"4\"},\"server\":\"819582eeb2eae05e\",\"prev\":\"fa55fa55fa55fa55fa55fa55fa55fa55fa55fa55fa55fa55fa55fa55fa55fa55\",\"hash\":\"8125defc900ecf0c141cb3e9c732dc085fe3b015a69269f8782393c7bc8ab294\",\"mac\":\"63fe149fcf111c1e50a5e54ef0427bbddf523519008fd325d57621bafeb78bdc\"}\n"},
		{"first record without a MAC", e2, Head{}, nil, "{\"seq\":1,\"time\":\"2026-12-01T16:38:08.319078259Z\",\"actor\":\"system\",\"action\":\"audit.start\",\"result\":\"ok\",\"prev\":\"\",\"hash\":\"19422dbdb727f93391074fdf965e565dd72e1727a74a1900d94008e853400267\"}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.e
			got, err := sealRecord(&e, tt.head, tt.key)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("line\n got %q\nwant %q", got, tt.want)
			}
			var back Event
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatal(err)
			}
			if e.Hash != back.Hash || e.MAC != back.MAC || e.Seq != back.Seq || e.Prev != back.Prev {
				t.Fatalf("sealed event %+v, its line says %+v", e, back)
			}
			// And by a sealer that sealed another record before, into
			// a buffer that holds it, as the committer does.
			s := &sealer{key: tt.key}
			other := deliveryEvent()
			buf, err := s.seal(nil, &other, Head{Seq: 5, Hash: strings.Repeat("0", 64)})
			if err != nil {
				t.Fatal(err)
			}
			n, e3 := len(buf), tt.e
			if buf, err = s.seal(buf, &e3, tt.head); err != nil {
				t.Fatal(err)
			}
			if string(buf[n:]) != tt.want || e3.Hash != e.Hash || e3.MAC != e.MAC {
				t.Fatalf("reused sealer: line\n got %q\nwant %q", buf[n:], tt.want)
			}
			h, err := Verify(strings.NewReader(string(got)), nil)
			if tt.head.Seq == 0 && (err != nil || h != (Head{Seq: 1, Hash: e.Hash})) {
				t.Fatalf("Verify = %v, %v", h, err)
			}
		})
	}
}

// TestCanonicalHandWritten checks that records as prepare makes them are
// written by hand, not by the encoding/json fallback (which the other
// tests could not tell apart): with its scratch space reused,
// appendCanonical allocates nothing.
func TestCanonicalHandWritten(t *testing.T) {
	for _, e := range []Event{deliveryEvent(), ev(3), {Actor: "system", Action: "server.start", Result: "ok"}} {
		p, err := prepare(e, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 0, 4096)
		var scratch []detail
		if allocs := testing.AllocsPerRun(10, func() { buf, _ = appendCanonical(buf[:0], &p, &scratch) }); allocs != 0 {
			t.Errorf("%s: %v allocations, want 0: the fallback wrote it", p.Action, allocs)
		}
	}
}
