package audit

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// openAnchored opens a Log in a temp dir anchored in a bbolt store, with
// MACs: as coffer-server does.
func openAnchored(b *testing.B) *Log {
	b.Helper()
	dir := b.TempDir()
	a, closeStore := realAnchor(b, dir)
	l, err := Open(filepath.Join(dir, "audit.log"), Options{Anchor: a})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close(); closeStore() })
	return l
}

// BenchmarkAppendParallel appends from many goroutines at once (64 per
// core), as a busy server and an agent rollout do; each Append waits for its
// group's fsync.
func BenchmarkAppendParallel(b *testing.B) {
	benchParallel(b, func(b *testing.B) *Log { l, _ := openTemp(b); return l })
}

// BenchmarkAppendParallelAnchored is BenchmarkAppendParallel with MACs and
// the head saved in a bbolt store at each group commit (a second fsync'd
// write per group), as coffer-server runs it.
func BenchmarkAppendParallelAnchored(b *testing.B) { benchParallel(b, openAnchored) }

func benchParallel(b *testing.B, open func(*testing.B) *Log) {
	for _, par := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("goroutines=%dxGOMAXPROCS", par), func(b *testing.B) {
			l := open(b)
			ctx := context.Background()
			e := ev(1)
			b.ReportAllocs()
			b.SetParallelism(par)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := l.Append(ctx, e); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportRate(b)
		})
	}
}

// BenchmarkAppendSerial appends from one goroutine: one fsync per record,
// the floor that group commit lifts.
func BenchmarkAppendSerial(b *testing.B) {
	l, _ := openTemp(b)
	benchSerial(b, l)
}

// BenchmarkAppendSerialAnchored is BenchmarkAppendSerial as coffer-server
// runs it: each record is its own group, so each pays the store write.
func BenchmarkAppendSerialAnchored(b *testing.B) { benchSerial(b, openAnchored(b)) }

func benchSerial(b *testing.B, l *Log) {
	ctx := context.Background()
	e := ev(1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Append(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b)
}

// BenchmarkVerify measures the chain walk that Open and Verify do.
func BenchmarkVerify(b *testing.B) {
	l, _ := openTemp(b)
	benchVerify(b, l)
}

// BenchmarkVerifyKeyed is BenchmarkVerify on an anchored trail, checking
// every record's MAC too, as coffer-server's Open and online verify do.
func BenchmarkVerifyKeyed(b *testing.B) { benchVerify(b, openAnchored(b)) }

func benchVerify(b *testing.B, l *Log) {
	ctx := context.Background()
	const n = 10_000
	for i := range n {
		if _, err := l.Append(ctx, ev(i)); err != nil && i == 0 {
			b.Fatal(err)
		}
	}
	want := l.Head()
	data, err := os.ReadFile(l.path)
	if err != nil {
		b.Fatal(err)
	}
	o := VerifyOptions{End: &want}
	if l.anchor != nil {
		o.Key, o.MACFrom = l.key, l.macFrom
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := VerifyWith(bytes.NewReader(data), o); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
}
