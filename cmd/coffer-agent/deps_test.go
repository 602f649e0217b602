package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestAgentDependencies keeps coffer-agent small: it runs on every host and
// must not link the server's store and sealing, the scanner, the web
// console, or any cloud SDK.
func TestAgentDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	forbidden := []string{
		"coffer/internal/store", "coffer/internal/seal", "coffer/internal/catalog", "coffer/internal/broker",
		"coffer/internal/api", "coffer/internal/scan", "coffer/internal/audit", "coffer/web",
		"go.etcd.io/bbolt", "github.com/google/go-containerregistry", "github.com/aws/", "github.com/Azure/",
		"cloud.google.com/", "github.com/hashicorp/vault", "gonum.org/",
		// Brokered keystores and KMS key wrappers are the server's business.
		"coffer/internal/keystore", "github.com/cyberark/", "github.com/hashicorp/go-retryablehttp",
		"github.com/aws/smithy-go", "github.com/nsmithuk/",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("coffer-agent links %s", dep)
			}
		}
	}
}
