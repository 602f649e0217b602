package agent

import (
	"maps"
	"reflect"
	"slices"
	"testing"

	"coffer/internal/execstate"
	"coffer/internal/secret"
)

// noteDigests keeps the newest digestHistory versions of each file, newest
// first, never changes the map it is given (a process watch may read it
// without the lock), and returns it as is when nothing changed.
func TestNoteDigestsHistory(t *testing.T) {
	file := func(name string, version uint64, value string) secret.File {
		return secret.File{Secret: "app/" + name, Version: version, Name: name, Value: secret.Value(value)}
	}
	var d map[string][]fileDigest
	for v := uint64(1); v <= 6; v++ {
		prev := maps.Clone(d)
		for k, h := range prev {
			prev[k] = slices.Clone(h)
		}
		next := noteDigests(d, []secret.File{file("a", v, "a"+string(rune('0'+v))), file("b", 1, "b1")})
		if d != nil && !maps.EqualFunc(d, prev, func(x, y []fileDigest) bool { return slices.Equal(x, y) }) {
			t.Fatalf("version %d: the previous map was changed", v)
		}
		d = next
		var got []uint64
		for _, h := range d["a"] {
			got = append(got, h.key.version)
		}
		var want []uint64
		for w := v; w >= 1 && len(want) < digestHistory; w-- {
			want = append(want, w)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("version %d: history %v, want %v", v, got, want)
		}
		if len(d["b"]) != 1 || d["b"][0].sum != execstate.Digest([]byte("b1")) {
			t.Fatalf("version %d: b's history %+v", v, d["b"])
		}
		if d["a"][0].sum != execstate.Digest([]byte("a"+string(rune('0'+v)))) {
			t.Fatalf("version %d: a's digest is not of its value", v)
		}
	}
	// Nothing changed: the same map, not a copy.
	same := noteDigests(d, []secret.File{file("a", 6, "a6"), file("b", 1, "b1")})
	if reflect.ValueOf(same).UnsafePointer() != reflect.ValueOf(d).UnsafePointer() {
		t.Fatal("an unchanged state made a new map")
	}
	// A file no longer delivered leaves the map.
	if got := noteDigests(d, []secret.File{file("a", 6, "a6")}); len(got) != 1 || got["b"] != nil {
		t.Fatalf("b kept after it left: %v", got)
	}
	// A file renamed (same count, another name) is noted.
	if got := noteDigests(d, []secret.File{file("a", 6, "a6"), file("c", 1, "c1")}); got["c"] == nil || got["b"] != nil {
		t.Fatalf("renamed file not noted: %v", got)
	}
}
