package scan

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// prefilter finds every occurrence of a set of keywords in one pass, ASCII
// case-insensitively, overlapping matches included: an Aho-Corasick
// automaton compiled to a flat DFA over byte classes.
//
// The scan loop is one table load per byte: next = trans[state + class[b]],
// with states premultiplied by the stride so no multiplication is needed,
// and states that end a keyword numbered last so that one comparison tells
// whether anything ends here. This is what bounds the scanner's speed on
// text (about 1 GB/s per core), so it is kept this simple.
type prefilter struct {
	class      [256]uint8
	stride     uint32   // a power of two ≥ the number of classes
	trans      []uint32 // premultiplied: state*stride + class → next state*stride
	firstMatch uint32   // premultiplied: states ≥ this end at least one keyword
	outs       [][]int32
	lens       []int32 // keyword lengths
	maxLen     int32
}

// maxPrefilterStates bounds the automaton (each state is one stride of
// uint32s).
const maxPrefilterStates = 1 << 16

func lowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// newPrefilter compiles keywords (case is ignored). Empty keywords are an
// error; duplicates are fine (each keeps its own index).
func newPrefilter(keywords []string) (*prefilter, error) {
	p := &prefilter{lens: make([]int32, len(keywords))}
	// Byte classes: bytes that no keyword uses share class 0; each other
	// (lower-cased) byte gets its own class, and an upper-case letter
	// shares the class of its lower-case form.
	var used [256]bool
	for i, k := range keywords {
		if k == "" {
			return nil, fmt.Errorf("empty keyword")
		}
		p.lens[i] = int32(len(k))
		p.maxLen = max(p.maxLen, int32(len(k)))
		for j := 0; j < len(k); j++ {
			used[lowerASCII(k[j])] = true
		}
	}
	n := uint8(1)
	for c := 0; c < 256; c++ {
		if used[c] {
			p.class[c] = n
			n++
		}
	}
	for c := 'A'; c <= 'Z'; c++ {
		p.class[c] = p.class[c+'a'-'A']
	}
	p.stride = 1
	for p.stride < uint32(n) {
		p.stride <<= 1
	}

	// The trie, in class space.
	type node struct {
		next map[uint8]int32
		fail int32
		out  []int32
	}
	nodes := []node{{next: map[uint8]int32{}}}
	for i, k := range keywords {
		s := int32(0)
		for j := 0; j < len(k); j++ {
			c := p.class[k[j]]
			nx, ok := nodes[s].next[c]
			if !ok {
				nx = int32(len(nodes))
				nodes = append(nodes, node{next: map[uint8]int32{}})
				nodes[s].next[c] = nx
			}
			s = nx
		}
		nodes[s].out = append(nodes[s].out, int32(i))
		if len(nodes) > maxPrefilterStates {
			return nil, fmt.Errorf("too many keywords: more than %d automaton states", maxPrefilterStates)
		}
	}
	// Failure links and the full transition function, breadth first.
	delta := make([][]int32, len(nodes))
	order := make([]int32, 0, len(nodes))
	delta[0] = make([]int32, p.stride)
	for c := uint32(0); c < p.stride; c++ {
		if nx, ok := nodes[0].next[uint8(c)]; ok {
			delta[0][c] = nx
			nodes[nx].fail = 0
			order = append(order, nx)
		}
	}
	for qi := 0; qi < len(order); qi++ {
		s := order[qi]
		f := nodes[s].fail
		nodes[s].out = append(nodes[s].out, nodes[f].out...)
		delta[s] = make([]int32, p.stride)
		for c := uint32(0); c < p.stride; c++ {
			if nx, ok := nodes[s].next[uint8(c)]; ok {
				delta[s][c] = nx
				nodes[nx].fail = delta[f][c]
				order = append(order, nx)
			} else {
				delta[s][c] = delta[f][c]
			}
		}
	}
	// Renumber: states without output first (the root stays 0), then the
	// states that end keywords.
	ids := make([]int32, len(nodes))
	var plain, matching []int32
	for s := range nodes {
		if len(nodes[s].out) == 0 {
			plain = append(plain, int32(s))
		} else {
			matching = append(matching, int32(s))
		}
	}
	all := append(plain, matching...)
	for newID, s := range all {
		ids[s] = int32(newID)
	}
	p.firstMatch = uint32(len(plain)) * p.stride
	p.trans = make([]uint32, uint32(len(nodes))*p.stride)
	for _, s := range all {
		base := uint32(ids[s]) * p.stride
		for c := uint32(0); c < p.stride; c++ {
			p.trans[base+c] = uint32(ids[delta[s][c]]) * p.stride
		}
	}
	p.outs = make([][]int32, len(matching))
	for i, s := range matching {
		out := slices.Clone(nodes[s].out)
		slices.Sort(out)
		p.outs[i] = slices.Compact(out)
	}
	return p, nil
}

// hit is a keyword occurrence: data[end-len(keyword):end].
type hit struct {
	kw  int32
	end int32
}

// lanes is how many parts of a buffer scan runs at once: each DFA step waits
// for the load of the previous one, so four independent walks interleaved
// keep the CPU busy four times as well as one.
const lanes = 4

// scan appends to hits every keyword occurrence in data, in order of their
// end, and returns the slice. data must be shorter than 2 GiB.
func (p *prefilter) scan(data []byte, hits []hit) []hit {
	overlap := int(p.maxLen) - 1
	q := len(data) / lanes
	if q <= overlap || q < 256 {
		_, hits = p.scanFrom(0, data, 0, 0, len(data), hits)
		return hits
	}
	// Lane k reports the keywords ending in (k*q, (k+1)*q]; it starts
	// overlap bytes early (from the root) so that it sees keywords that
	// start in the lane before. Lane 0 runs as long as the others and drops
	// what it finds beyond q.
	n := q + overlap
	st := [lanes]int{0, q - overlap, 2*q - overlap, 3*q - overlap}
	d0 := data[st[0] : st[0]+n]
	d1 := data[st[1] : st[1]+n]
	d2 := data[st[2] : st[2]+n]
	d3 := data[st[3] : st[3]+n]
	trans, cls, fm := p.trans, &p.class, p.firstMatch
	var s0, s1, s2, s3 uint32
	var lh [lanes][]hit
	emit := func(j int, ss [lanes]uint32) {
		for k, sk := range ss {
			if sk < fm {
				continue
			}
			end := st[k] + j + 1
			if end <= k*q || end > (k+1)*q {
				continue
			}
			for _, kw := range p.outs[(sk-fm)/p.stride] {
				lh[k] = append(lh[k], hit{kw: kw, end: int32(end)})
			}
		}
	}
	for j := range d0 {
		s0 = trans[s0+uint32(cls[d0[j]])]
		s1 = trans[s1+uint32(cls[d1[j]])]
		s2 = trans[s2+uint32(cls[d2[j]])]
		s3 = trans[s3+uint32(cls[d3[j]])]
		if max(s0, s1, s2, s3) >= fm {
			emit(j, [lanes]uint32{s0, s1, s2, s3})
		}
	}
	for k := range lanes - 1 {
		hits = append(hits, lh[k]...)
	}
	hits = append(hits, lh[lanes-1]...)
	// The last lane goes on to the end of data.
	_, hits = p.scanFrom(s3, data, st[3]+n, 3*q, len(data), hits)
	return hits
}

// scanBinary is scan for a binary file: keywords are searched only in runs
// of printable bytes (tabs and line breaks included) that hold at least one
// 8-byte-aligned word of printable ASCII, so runs of 15 bytes and more are
// always searched. A match in a binary is confined to its printable run,
// and nothing shorter than that holds a keyword and a secret; skipping the
// rest (machine code, compressed data) word by word is several times faster
// than running the automaton over it.
func (p *prefilter) scanBinary(data []byte, hits []hit) []hit {
	n := len(data)
	prevEnd := 0
	for i := 0; i+8 <= n; {
		if !printableWord(binary.LittleEndian.Uint64(data[i:])) {
			i += 8
			continue
		}
		s, e := i, i+8
		for s > prevEnd && printableByte(data[s-1], true) {
			s--
		}
		for e < n && printableByte(data[e], true) {
			e++
		}
		base := len(hits)
		hits = p.scan(data[s:e], hits)
		for k := base; k < len(hits); k++ {
			hits[k].end += int32(s)
		}
		prevEnd = e
		i = (e + 7) &^ 7
	}
	return hits
}

// printableWord reports whether all 8 bytes of w are in 0x20..0x7e.
func printableWord(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	high := w & highs
	below := (w - 0x20*ones) &^ w & highs                      // a byte < 0x20 (exact when no high bit is set)
	del := ((w ^ 0x7f*ones) - ones) &^ (w ^ 0x7f*ones) & highs // a byte == 0x7f
	return high|below|del == 0
}

// scanFrom runs the automaton from state s over data[from:to], appending
// the keywords that end after minEnd; it returns the state it ends in.
func (p *prefilter) scanFrom(s uint32, data []byte, from, minEnd, to int, hits []hit) (uint32, []hit) {
	trans, cls, fm := p.trans, &p.class, p.firstMatch
	for i := from; i < to; i++ {
		s = trans[s+uint32(cls[data[i]])]
		if s >= fm && i+1 > minEnd {
			for _, k := range p.outs[(s-fm)/p.stride] {
				hits = append(hits, hit{kw: k, end: int32(i + 1)})
			}
		}
	}
	return s, hits
}
