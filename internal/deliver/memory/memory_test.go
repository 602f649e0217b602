package memory_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"coffer/internal/container"
	"coffer/internal/deliver/memory"
	"coffer/internal/secret"
)

func file(name string, version uint64, value string) secret.File {
	return secret.File{Secret: "app/" + name, Version: version, Name: name, Mode: 0o400, Value: secret.Value(value)}
}

func TestApplyRotateRevokeRelease(t *testing.T) {
	ctx := context.Background()
	var hookCalls int
	d := memory.New(memory.Config{OnApply: func(id string, files []secret.File) {
		if id != "c1" {
			t.Errorf("hook id = %q", id)
		}
		hookCalls++
	}})
	c := container.Info{ID: "c1", PID: 42}

	in := file("db", 1, "v1")
	if err := d.Apply(ctx, c, []secret.File{in, file("api", 1, "k1")}); err != nil {
		t.Fatal(err)
	}
	in.Value[0] = 'X' // caller's buffer is not shared
	got := d.Files("c1")
	if len(got) != 2 || string(got["db"].Value) != "v1" {
		t.Fatalf("files = %v", got)
	}
	held := d.Files("c1")["db"].Value // a copy: survives rotation
	internal := got["db"].Value

	if err := d.Apply(ctx, c, []secret.File{file("db", 2, "v2")}); err != nil {
		t.Fatal(err)
	}
	got = d.Files("c1")
	if len(got) != 1 || got["db"].Version != 2 || string(got["db"].Value) != "v2" {
		t.Fatalf("after rotate+revoke files = %v", got)
	}
	if string(held) != "v1" || string(internal) != "v1" {
		t.Fatal("Files did not return copies")
	}
	if d.Applies("c1") != 2 || hookCalls != 2 {
		t.Fatalf("applies=%d hook=%d", d.Applies("c1"), hookCalls)
	}

	if err := d.Release(ctx, c); err != nil {
		t.Fatal(err)
	}
	if d.Files("c1") != nil || !d.Released("c1") {
		t.Fatal("release kept files")
	}
}

func TestApplyRejectsBadInput(t *testing.T) {
	d := memory.New(memory.Config{})
	c := container.Info{ID: "c"}
	for name, want := range map[string][]secret.File{
		"hidden":    {file(".x", 1, "v")},
		"slash":     {file("a/b", 1, "v")},
		"duplicate": {file("a", 1, "v"), file("a", 2, "w")},
	} {
		t.Run(name, func(t *testing.T) {
			if err := d.Apply(context.Background(), c, want); err == nil {
				t.Fatal("Apply accepted bad input")
			}
		})
	}
	if err := d.Apply(context.Background(), container.Info{}, nil); err == nil {
		t.Fatal("Apply accepted empty id")
	}
}

func TestFail(t *testing.T) {
	boom := errors.New("boom")
	d := memory.New(memory.Config{Fail: func(c container.Info) error {
		if c.ID == "bad" {
			return boom
		}
		return nil
	}})
	if err := d.Apply(context.Background(), container.Info{ID: "bad"}, []secret.File{file("a", 1, "v")}); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if d.Files("bad") != nil {
		t.Fatal("failed Apply recorded files")
	}
}

func TestWaitConcurrent(t *testing.T) {
	d := memory.New(memory.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := container.Info{ID: fmt.Sprintf("c%d", i)}
			for v := uint64(1); v <= 3; v++ {
				if err := d.Apply(ctx, c, []secret.File{file("s", v, "x")}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	err := d.Wait(ctx, func(all map[string]map[string]secret.File) bool {
		if len(all) < n {
			return false
		}
		for _, files := range all {
			if files["s"].Version != 3 {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := d.WaitFiles(ctx, "c7", func(f map[string]secret.File) bool { return f["s"].Version == 3 }); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelShort()
	if err := d.WaitFiles(short, "none", func(f map[string]secret.File) bool { return f != nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait err = %v, want deadline", err)
	}
}

// A rotation to a shorter value reuses the held buffer: the old bytes past
// the new value are zeroed, not left behind; a longer one gets a new buffer
// and the old one is zeroed.
func TestRotationLeavesNoStaleBytes(t *testing.T) {
	ctx := context.Background()
	d := memory.New(memory.Config{})
	c := container.Info{ID: "c1"}
	held := func() secret.Value {
		var v secret.Value
		d.WaitFiles(ctx, "c1", func(f map[string]secret.File) bool { v = f["db"].Value; return true })
		return v
	}
	if err := d.Apply(ctx, c, []secret.File{file("db", 1, "a-long-first-value"), file("api", 1, "k1")}); err != nil {
		t.Fatal(err)
	}
	first := held()
	if err := d.Apply(ctx, c, []secret.File{file("db", 2, "short")}); err != nil {
		t.Fatal(err)
	}
	got := d.Files("c1")
	if len(got) != 1 || string(got["db"].Value) != "short" || got["db"].Version != 2 {
		t.Fatalf("files after rotation: %v", got)
	}
	if string(first[:5]) != "short" {
		t.Fatalf("the buffer was not reused: %q", first)
	}
	for i, b := range first[5:] {
		if b != 0 {
			t.Fatalf("byte %d of the old value left behind: %q", 5+i, first)
		}
	}
	second := held()
	if err := d.Apply(ctx, c, []secret.File{file("db", 3, "a value longer than the buffer it had")}); err != nil {
		t.Fatal(err)
	}
	if got := d.Files("c1")["db"].Value; string(got) != "a value longer than the buffer it had" {
		t.Fatalf("value %q", got)
	}
	for _, b := range second[:cap(second)] {
		if b != 0 {
			t.Fatalf("the replaced buffer was not zeroed: %q", second[:cap(second)])
		}
	}
}

// Names a container holds are not checked again, but a bad name next to
// them is refused, and the Apply changes nothing.
func TestBadNameNextToHeldFiles(t *testing.T) {
	ctx := context.Background()
	d := memory.New(memory.Config{})
	c := container.Info{ID: "c1"}
	if err := d.Apply(ctx, c, []secret.File{file("db", 1, "v1")}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{".x", "a/b", "..", ""} {
		if err := d.Apply(ctx, c, []secret.File{file("db", 2, "v2"), file(bad, 1, "v")}); err == nil {
			t.Fatalf("Apply accepted %q next to a held file", bad)
		}
	}
	if err := d.Apply(ctx, c, []secret.File{file("db", 2, "v2"), file("db", 3, "v3")}); err == nil {
		t.Fatal("Apply accepted a held name twice")
	}
	if got := d.Files("c1"); len(got) != 1 || string(got["db"].Value) != "v1" || d.Applies("c1") != 1 {
		t.Fatalf("a refused Apply changed the files: %v", got)
	}
}
