package scan

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"

	"coffer/internal/scan/scangen"
)

// naiveHits finds every occurrence of every keyword, case-insensitively.
func naiveHits(keywords []string, data []byte) []hit {
	low := bytes.ToLower(data)
	var out []hit
	for end := 1; end <= len(data); end++ {
		for k, kw := range keywords {
			n := len(kw)
			if n <= end && bytes.Equal(low[end-n:end], bytes.ToLower([]byte(kw))) {
				out = append(out, hit{kw: int32(k), end: int32(end)})
			}
		}
	}
	return out
}

func TestPrefilter(t *testing.T) {
	kws := []string{"pass", "password", "PASSWD", "sword", "word", "s", "AKIA", "://", "ab", "b", "abc", "bca", "$2y$", "\x00x"}
	p, err := newPrefilter(kws)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	alpha := []byte("pPaAsSwWoOrRdDkKiIbBcC:/$2y\x00x ")
	for i := range 300 {
		data := make([]byte, r.IntN(200)+(i%3)*r.IntN(5000))
		for j := range data {
			data[j] = alpha[r.IntN(len(alpha))]
		}
		if i == 0 {
			data = []byte("my Password: abcab PassWord://x AKIA $2y$ \x00x")
		}
		got := p.scan(data, nil)
		want := naiveHits(kws, data)
		slices.SortFunc(got, func(a, b hit) int { return int(a.end-b.end)*100 + int(a.kw-b.kw) })
		slices.SortFunc(want, func(a, b hit) int { return int(a.end-b.end)*100 + int(a.kw-b.kw) })
		if !slices.Equal(got, want) {
			t.Fatalf("%q:\ngot  %v\nwant %v", data, got, want)
		}
	}
	if _, err := newPrefilter([]string{"a", ""}); err == nil {
		t.Error("empty keyword accepted")
	}
}

func BenchmarkPrefilter(b *testing.B) {
	rs, err := LoadRules()
	if err != nil {
		b.Fatal(err)
	}
	for _, kind := range []string{"python", "prose", "elf", "noise"} {
		data := scangen.Sample(kind, 4<<20, 1)
		b.Run(kind, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			var hits []hit
			for b.Loop() {
				hits = rs.pf.scan(data, hits[:0])
			}
		})
	}
}

// TestPrefilterBinary: in a binary, keywords are found in printable runs of
// 15 bytes and more wherever they sit, and the positions are the file's.
func TestPrefilterBinary(t *testing.T) {
	kws := []string{"password", "akia", "begin rsa"}
	p, err := newPrefilter(kws)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		data := make([]byte, 100+r.IntN(3000))
		for j := range data {
			data[j] = byte(r.UintN(256)) | 0x80 // nothing printable
		}
		// a run of 15..60 printable bytes holding a keyword, anywhere
		run := []byte("x=" + kws[r.IntN(len(kws))] + "=Zr8f3kQ9pLx2Vb7mAbcdefghijklmnopqrstuvwxyz0123456789")[:15+r.IntN(46)]
		if len(run) < 15 {
			continue
		}
		at := r.IntN(len(data) - len(run))
		copy(data[at:], run)
		got := p.scanBinary(data, nil)
		want := naiveHits(kws, data[at:at+len(run)])
		for i := range want {
			want[i].end += int32(at)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("run %q at %d: got %v, want %v", run, at, got, want)
		}
	}
	for _, w := range []string{"abcdefgh", "        ", "~~~~~~~~"} {
		if !printableWord(binary.LittleEndian.Uint64([]byte(w))) {
			t.Errorf("%q not printable", w)
		}
	}
	for _, w := range []string{"abcdefg\x00", "\x7fbcdefgh", "abc\x1fefgh", "abcdefg\x80", "abcd\tfgh"} {
		if printableWord(binary.LittleEndian.Uint64([]byte(w))) {
			t.Errorf("%q printable", w)
		}
	}
}
