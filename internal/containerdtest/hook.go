package containerdtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// DebianHook is Debian's containerd 1.6 (no NRI) whose base runtime spec
// runs an OCI createRuntime hook for every container (never for the pause
// sandbox: the CRI builds its spec apart): the delivery path of Kubernetes
// nodes whose containerd has no NRI. The hook's argv is given to Hooked;
// the pod annotation coffer/require-secrets is passed through to the
// containers' OCI annotations (pod_annotations), as docs/kubernetes.md
// tells operators to configure it.
const DebianHook Kind = 2

// HookTimeout is the timeout, in seconds, of the hook in the base spec:
// runc kills a hook that runs longer and fails the container's start.
const HookTimeout = 10

// PassedAnnotations are the pod annotations a DebianHook daemon copies
// into its containers' OCI annotations.
var PassedAnnotations = []string{"coffer/require-secrets"}

// Hooked returns the package's one DebianHook daemon, starting it on first
// use with hook as the createRuntime hook's argv; "{socket}" in an argument
// is replaced by the daemon's HookSocket. Every call in a package must
// pass the same argv. StopShared stops it. It skips t when it cannot run.
func Hooked(t testing.TB, hook ...string) *Daemon {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "containerdtest: needs root")
	}
	if len(hook) == 0 || !filepath.IsAbs(hook[0]) {
		t.Fatalf("containerdtest: Hooked: want the hook's absolute path first, got %q", hook)
	}
	bin, ctr := "/usr/bin/containerd", "/usr/bin/ctr"
	for _, p := range []string{bin, ctr, "/usr/sbin/runc", "/bin/busybox", hook[0]} {
		if _, err := os.Stat(p); err != nil {
			Skip(t, "containerdtest: %s missing (apt-get install containerd runc busybox-static): %v", p, err)
		}
	}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if d := shared[DebianHook]; d != nil {
		if !slices.Equal(d.hook, hook) {
			t.Fatalf("containerdtest: Hooked with hook %q, the daemon runs %q", hook, d.hook)
		}
		return d
	}
	if err := failed[DebianHook]; err != nil {
		t.Fatalf("containerdtest: %v (failed before)", err)
	}
	d, err := start(DebianHook, bin, ctr, hook)
	if err != nil {
		failed[DebianHook] = err
		t.Fatalf("containerdtest: %v", err)
	}
	shared[DebianHook] = d
	return d
}

// writeHookSpec writes base-spec.json: containerd's default spec (ctr oci
// spec) plus the createRuntime hook.
func (d *Daemon) writeHookSpec() error {
	d.HookSocket = filepath.Join(d.Dir, "hook.sock")
	out, err := exec.Command(d.ctr, "oci", "spec").Output()
	if err != nil {
		return fmt.Errorf("ctr oci spec: %w", err)
	}
	var spec map[string]any
	if err := json.Unmarshal(out, &spec); err != nil {
		return fmt.Errorf("ctr oci spec: %w", err)
	}
	args := make([]string, len(d.hook))
	for i, a := range d.hook {
		args[i] = strings.ReplaceAll(a, "{socket}", d.HookSocket)
	}
	spec["hooks"] = map[string]any{"createRuntime": []any{map[string]any{
		"path": args[0], "args": args, "timeout": HookTimeout,
	}}}
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d.Dir, "base-spec.json"), b, 0o600)
}

// hookConfig is the runc runtime's extra keys for a DebianHook daemon.
func (d *Daemon) hookConfig() string {
	if d.Kind != DebianHook {
		return ""
	}
	ann, _ := json.Marshal(PassedAnnotations)
	return fmt.Sprintf("\n      base_runtime_spec = %q\n      pod_annotations = %s", filepath.Join(d.Dir, "base-spec.json"), ann)
}

// PID is the host pid of a running container's process, as the CRI
// reports it (ContainerStatus, verbose).
func (d *Daemon) PID(t testing.TB, id string) int {
	t.Helper()
	resp, err := d.CRI.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatalf("containerdtest: status of %s: %v", id, err)
	}
	var info struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(resp.GetInfo()["info"]), &info); err != nil || info.PID == 0 {
		t.Fatalf("containerdtest: no pid for %s: %v", id, err)
	}
	return info.PID
}
