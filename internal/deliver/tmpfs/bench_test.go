package tmpfs_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"coffer/internal/container"
	"coffer/internal/deliver/tmpfs"
	"coffer/internal/dockertest"
	"coffer/internal/secret"
)

// BenchmarkApplyRotation rotates every file of N running containers at once
// (N concurrent Applies of 3 files each) and reports the per-Apply latency
// percentiles and the wall time of one whole rotation.
func BenchmarkApplyRotation(b *testing.B) {
	env := dockertest.Require(b)
	env.Image(b)
	const maxN = 100
	infos := make([]container.Info, maxN)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range infos {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c := env.Run(b, dockertest.RunOpts{Name: fmt.Sprintf("coffer-bench-%d-%d", i, time.Now().UnixNano())})
			infos[i] = container.Info{ID: c.ID, Name: c.Name, PID: c.PID}
		}()
	}
	wg.Wait()

	d, err := tmpfs.New(tmpfs.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Close() })
	version := uint64(1)
	files := func(v uint64) []secret.File {
		out := make([]secret.File, 3)
		for i := range out {
			out[i] = secret.File{Secret: fmt.Sprintf("bench/s%d", i), Version: v, Name: fmt.Sprintf("s%d", i),
				Mode: 0o400, UID: 1000, GID: 1000, Value: secret.Value(fmt.Sprintf("%064d", v))}
		}
		return out
	}
	// First delivery: mounts a tmpfs in each container.
	first := rotate(b, d, infos, files(version))
	b.Logf("first delivery to %d containers: p50 %.1f ms, p99 %.1f ms", maxN, pct(first, 50), pct(first, 99))

	for _, n := range []int{20, 100} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			var all []time.Duration
			var wall time.Duration
			b.ResetTimer()
			for range b.N {
				version++
				start := time.Now()
				all = append(all, rotate(b, d, infos[:n], files(version))...)
				wall += time.Since(start)
			}
			b.StopTimer()
			b.ReportMetric(pct(all, 50), "p50-ms")
			b.ReportMetric(pct(all, 99), "p99-ms")
			b.ReportMetric(pct(all, 100), "max-ms")
			b.ReportMetric(float64(wall.Microseconds())/1000/float64(b.N), "round-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// rotate applies want to every container concurrently and returns each
// Apply's latency.
func rotate(b *testing.B, d *tmpfs.Deliverer, infos []container.Info, want []secret.File) []time.Duration {
	lat := make([]time.Duration, len(infos))
	var wg sync.WaitGroup
	for i, info := range infos {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			if err := d.Apply(context.Background(), info, want); err != nil {
				b.Error(err)
			}
			lat[i] = time.Since(start)
		}()
	}
	wg.Wait()
	return lat
}

// pct returns the p-th percentile of ds in milliseconds (nearest rank).
func pct(ds []time.Duration, p float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	i = max(0, min(i, len(s)-1))
	return float64(s[i].Microseconds()) / 1000
}

// BenchmarkApplySequential measures one Apply at a time to one container:
// the fixed cost of a request (helper round trip, new thread, setns, writes).
func BenchmarkApplySequential(b *testing.B) {
	env := dockertest.Require(b)
	c := env.Run(b, dockertest.RunOpts{})
	info := container.Info{ID: c.ID, Name: c.Name, PID: c.PID}
	d, err := tmpfs.New(tmpfs.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Close() })
	for _, rotate := range []bool{false, true} {
		b.Run(fmt.Sprintf("rotate=%v", rotate), func(b *testing.B) {
			v := uint64(1)
			for b.Loop() {
				if rotate {
					v++
				}
				want := []secret.File{{Secret: "bench/s", Version: v, Name: "s", Mode: 0o400, Value: secret.Value("0123456789abcdef")}}
				if err := d.Apply(context.Background(), info, want); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
