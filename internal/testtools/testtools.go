// Package testtools finds the heavy test tools that scripts/test-tools.sh
// builds once into a cache directory outside the repository (Vault, etcd,
// containerd, Helm, kube-apiserver and kubelet), for tests that run them as real servers.
//
// A test that needs a tool calls Path; when the tool is missing the test
// is skipped with a message saying how to build it, or fails when
// COFFER_REQUIRE_TOOLS=1 (CI sets it, so a missing tool is never a silent
// skip there).
package testtools

import (
	"os"
	"path/filepath"
	"testing"
)

// Versions built by scripts/test-tools.sh; keep the two in step.
const (
	VaultVersion = "v1.21.1"
	EtcdVersion  = "v3.6.16"
	HelmVersion  = "v3.22.0"
	// ContainerdVersion: containerd, containerd-shim-runc-v2 and ctr (NRI
	// on by default; runc comes from Debian).
	ContainerdVersion = "v2.2.9"
	// KubeVersion: kube-apiserver and kubelet (the last line that runs on
	// this machine's cgroup v1 without overrides).
	KubeVersion = "v1.34.4"
)

// Dir is the cache directory: $COFFER_TOOLS, or /var/cache/coffer-tools.
func Dir() string {
	if d := os.Getenv("COFFER_TOOLS"); d != "" {
		return d
	}
	return "/var/cache/coffer-tools"
}

// Tool names.
const (
	Vault   = "vault"
	Etcd    = "etcd"
	Etcdctl = "etcdctl"
	// Etcdutl is etcd's offline tool (snapshot restore).
	Etcdutl = "etcdutl"
	Helm    = "helm"
	// Containerd is the containerd binary; its shim and ctr sit beside it.
	Containerd = "containerd"
	// KubeAPIServer and Kubelet are Kubernetes' own binaries.
	KubeAPIServer = "kube-apiserver"
	Kubelet       = "kubelet"
)

// Path returns the path of a tool's binary, or skips (fails under
// COFFER_REQUIRE_TOOLS=1) the test when it has not been built.
func Path(t testing.TB, tool string) string {
	t.Helper()
	var p, script string
	switch tool {
	case Vault:
		p, script = filepath.Join(Dir(), "vault-"+VaultVersion, "vault"), "vault"
	case Etcd, Etcdctl, Etcdutl:
		p, script = filepath.Join(Dir(), "etcd-"+EtcdVersion, tool), "etcd"
	case Helm:
		p, script = filepath.Join(Dir(), "helm-"+HelmVersion, "helm"), "helm"
	case Containerd:
		p, script = filepath.Join(Dir(), "containerd-"+ContainerdVersion, tool), "containerd"
	case KubeAPIServer, Kubelet:
		p, script = filepath.Join(Dir(), "kube-"+KubeVersion, tool), "kube"
	default:
		t.Fatalf("testtools: unknown tool %q", tool)
	}
	if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
		return p
	}
	msg := tool + " is not built: run scripts/test-tools.sh " + script + " (binary expected at " + p + ")"
	if os.Getenv("COFFER_REQUIRE_TOOLS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}
