package bolt

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"coffer/internal/store"
	"coffer/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	b, err := Open(filepath.Join(t.TempDir(), "coffer.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	storetest.Run(t, b)
}

func TestCorruptFileIsRefusedAndKept(t *testing.T) {
	p := filepath.Join(t.TempDir(), "coffer.db")
	junk := make([]byte, 8192)
	for i := range junk {
		junk[i] = byte(i * 7)
	}
	if err := os.WriteFile(p, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(p)
	if err == nil {
		t.Fatal("Open of a corrupt file succeeded")
	}
	if !errors.Is(err, store.ErrCorrupt) {
		t.Logf("error (not ErrCorrupt): %v", err)
	}
	got, _ := os.ReadFile(p)
	if string(got) != string(junk) {
		t.Fatal("corrupt file was modified")
	}
}

func TestReopenLeavesFileUntouched(t *testing.T) {
	p := filepath.Join(t.TempDir(), "coffer.db")
	b, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	before, _ := os.ReadFile(p)
	b, err = Open(p)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if after, _ := os.ReadFile(p); string(after) != string(before) {
		t.Fatal("reopening the store changed its file")
	}
}
