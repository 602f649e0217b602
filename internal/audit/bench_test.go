package audit

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"
)

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkAppendParallel appends from many goroutines at once (64 per
// core), as a busy server and an agent rollout do; each Append waits for its
// group's fsync.
func BenchmarkAppendParallel(b *testing.B) {
	for _, par := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("goroutines=%dxGOMAXPROCS", par), func(b *testing.B) {
			l, _ := openTemp(b)
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
	l, path := openTemp(b)
	ctx := context.Background()
	const n = 10_000
	for i := range n {
		if _, err := l.Append(ctx, ev(i)); err != nil && i == 0 {
			b.Fatal(err)
		}
	}
	want := l.Head()
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Verify(bytes.NewReader(data), &want); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
}
