package main

import (
	"testing"
	"time"

	"coffer/internal/secret"
)

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := summarize("x", ds)
	if s.N != 100 || s.P50 != 50 || s.P90 != 90 || s.P99 != 99 || s.Max != 100 || s.Mean != 50.5 {
		t.Fatalf("summary = %+v", s)
	}
	if e := summarize("empty", nil); e.N != 0 || e.P99 != 0 {
		t.Fatalf("empty summary = %+v", e)
	}
	pts := cdf(s.raw, 10)
	if len(pts) != 11 || pts[len(pts)-1].Y != 1 || pts[0].X != 1 {
		t.Fatalf("cdf = %v", pts)
	}
}

func TestContainerIndex(t *testing.T) {
	for _, i := range []int{0, 7, 12345678} {
		if got, ok := containerIndex(containerID(i)); !ok || got != i {
			t.Errorf("containerIndex(containerID(%d)) = %d, %v", i, got, ok)
		}
	}
	if _, ok := containerIndex("fetch-1-2"); ok {
		t.Error("foreign id parsed")
	}
}

func TestRecorder(t *testing.T) {
	r := &recorder{}
	e := r.expect(10, 12, func(fs []secret.File) bool { _, ok := fileOf(fs, "f"); return ok })
	with := []secret.File{{Name: "f", Value: secret.Value("v")}}
	r.onApply(containerID(9), with)                       // outside the range
	r.onApply(containerID(10), nil)                       // does not satisfy
	r.onApply(containerID(10), with)                      // satisfies
	r.onApply(containerID(10), with)                      // counted once
	if e.remaining.Load() != 1 || with[0].Value[0] != 0 { // onApply zeroes what it is given
		t.Fatalf("remaining %d, value %v", e.remaining.Load(), with[0].Value)
	}
	r.onApply(containerID(11), []secret.File{{Name: "f", Value: secret.Value("v")}})
	select {
	case <-e.done:
	default:
		t.Fatal("expectation not done")
	}
	lat, early := e.since(time.Now().Add(time.Hour), nil)
	if len(lat) != 2 || early != 2 || lat[0] != 0 {
		t.Fatalf("since = %v, %d", lat, early)
	}
}
