package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDeletedRetentionConfig(t *testing.T) {
	if d := Defaults().DeletedRetention; d != 7*24*time.Hour {
		t.Fatalf("default deleted_retention = %s", d)
	}
	p := filepath.Join(t.TempDir(), "server.yaml")
	os.WriteFile(p, []byte("deleted_retention: 48h\n"), 0o600)
	c := Defaults()
	if err := c.LoadFile(p); err != nil || c.DeletedRetention != 48*time.Hour || c.Validate() != nil {
		t.Fatalf("deleted_retention = %s, %v", c.DeletedRetention, err)
	}
	for _, d := range []time.Duration{0, -time.Hour, time.Second, 366 * 24 * time.Hour} {
		c := Defaults()
		c.DeletedRetention = d
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "deleted_retention") {
			t.Errorf("deleted_retention %s: %v", d, err)
		}
	}
}
