package kube

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("clusters: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	for _, p := range []string{"", filepath.Join(dir, "missing"), bad, InCluster} {
		if _, err := LoadConfig(p); !errors.Is(err, ErrConfig) {
			t.Errorf("LoadConfig(%q) = %v, want ErrConfig", p, err)
		}
	}
}
