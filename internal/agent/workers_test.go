package agent

import (
	"context"
	"sync"
	"testing"
	"time"
)

// A job after another has finished reuses its goroutine; jobs that come
// while all workers are busy get goroutines of their own and run in
// parallel; idle workers end with their context.
func TestWorkersReuseAndParallel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	w := newWorkers()
	done := make(chan struct{})
	w.run(ctx, func() { done <- struct{}{} })
	<-done
	for range 5 {
		handOver(t, w, func() { done <- struct{}{} })
		<-done
	}
	if n := w.started.Load(); n != 1 {
		t.Fatalf("%d goroutines for 6 jobs one after the other, want 1", n)
	}

	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 4 {
		wg.Add(1)
		w.run(ctx, func() { defer wg.Done(); <-release }) // all four at once, or this blocks
	}
	close(release)
	wg.Wait()
	if n := w.started.Load(); n < 4 {
		t.Fatalf("%d goroutines for 4 jobs at once", n)
	}

	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		select {
		case w.jobs <- func() {}:
			if time.Now().After(deadline) {
				t.Fatal("an idle worker still takes jobs after its context ended")
			}
			time.Sleep(10 * time.Millisecond)
			continue
		default:
		}
		break
	}
}

// handOver gives f to an idle worker, as run does when one is idle,
// waiting until one is.
func handOver(t *testing.T, w *workers, f func()) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		select {
		case w.jobs <- f:
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no idle worker")
		}
	}
}
