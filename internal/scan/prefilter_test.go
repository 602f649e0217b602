package scan

import (
	"bytes"
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
