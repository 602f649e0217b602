package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestRollback(t *testing.T) {
	ctx := context.Background()
	r := newRig(t) // keeps 3 versions
	for i := 1; i <= 5; i++ {
		r.put(t, "app/db", fmt.Sprintf("rollback-probe-value-%d", i))
	}
	r.took()

	res, err := r.Rollback(ctx, "app/db", 4, "token:ops", false)
	if err != nil || res.Current != 6 || res.From != 5 || res.To != 4 {
		t.Fatalf("rollback = %+v, %v", res, err)
	}
	if v := res.Versions[0]; v.Version != 6 || v.RollbackOf != 4 || v.Author != "token:ops" {
		t.Fatalf("new version = %+v", v)
	}
	if len(res.Versions) != 3 {
		t.Fatalf("kept %d versions, want 3", len(res.Versions))
	}
	if ch := r.took(); len(ch) != 1 || ch[0].Kind != SecretPut || ch[0].Version != 6 {
		t.Fatalf("changes = %+v", ch)
	}
	if r.value(t, "app/db", 6) != "rollback-probe-value-4" {
		t.Fatal("version 6 is not a copy of version 4")
	}
	shown, err := r.Show(ctx, "app/db")
	if err != nil || shown.Current != 6 || shown.Versions[0].RollbackOf != 4 {
		t.Fatalf("show = %+v, %v", shown, err)
	}

	// Refused: a clear error naming the reason, nothing changed, no value in it.
	if err := r.Delete(ctx, "other"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	r.put(t, "del", "x")
	r.put(t, "del", "y")
	if err := r.Delete(ctx, "del"); err != nil {
		t.Fatal(err)
	}
	r.took()
	before := r.dump(t)
	for _, tt := range []struct {
		name string
		to   uint64
		want error
		says string
	}{
		{"app/db", 3, ErrGone, "version 3 of secret app/db: no longer kept: it was pruned or destroyed (versions kept: 4 to 6)"},
		{"app/db", 1, ErrGone, "pruned or destroyed"},
		{"app/db", 7, ErrNotFound, "secret app/db has no version 7 (the current version is 6)"},
		{"app/db", 6, ErrConflict, "it is the current version already"},
		{"app/db", 0, ErrInvalid, "version 0"},
		{"missing", 1, ErrNotFound, "secret missing: not found"},
		{"del", 1, ErrNotFound, "it was deleted at"},
	} {
		_, err := r.Rollback(ctx, tt.name, tt.to, "t", false)
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("rollback %s to %d: %v, want %v saying %q", tt.name, tt.to, err, tt.want, tt.says)
		}
		if err != nil && strings.Contains(err.Error(), "probe-value") {
			t.Errorf("error carries a value: %v", err)
		}
	}
	if r.dump(t) != before || len(r.took()) != 0 {
		t.Fatal("a refused rollback changed the store")
	}

	// A purged and recreated secret cannot roll back to its old versions.
	if _, err := r.Purge(ctx, "del", false); err != nil {
		t.Fatal(err)
	}
	r.put(t, "del", "z") // version 3
	r.put(t, "del", "w") // version 4
	if _, err := r.Rollback(ctx, "del", 2, "t", false); !errors.Is(err, ErrGone) {
		t.Fatalf("rollback to a destroyed version: %v", err)
	}
	if res, err := r.Rollback(ctx, "del", 3, "t", false); err != nil || res.Current != 5 || r.value(t, "del", 5) != "z" {
		t.Fatalf("rollback after recreation = %+v, %v", res, err)
	}
}
