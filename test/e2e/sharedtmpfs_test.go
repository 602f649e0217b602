package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"coffer/internal/dockertest"
)

// A container whose /run/secrets is a named tmpfs volume, shared with
// another container and the host, is refused: nothing is written, and the
// agent's error reaches the audit trail.
func TestSharedTmpfsVolumeRefusedAndAudited(t *testing.T) {
	s := newStack(t)
	value := "e2e-shared-" + randID()
	vol := "coffer-e2e-" + s.label
	if _, err := s.docker.Docker(t, "volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs", vol); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.docker.Docker(t, "volume", "rm", "-f", vol) })
	volDir, err := s.docker.Docker(t, "volume", "inspect", "--format", "{{.Mountpoint}}", vol)
	if err != nil {
		t.Fatal(err)
	}
	s.srv.MustCLI(t, value, "secret", "put", "e2e/shared")
	s.srv.MustCLI(t, "", "bind", "create", "e2e-shared", "--secret", "e2e/shared", "--selector", "app="+s.label)

	served := s.run(dockertest.RunOpts{Labels: map[string]string{"app": s.label}, Args: []string{"-v", vol + ":/run/secrets"}})
	// Another workload with the same volume, not served by Coffer.
	other := s.docker.Run(t, dockertest.RunOpts{Args: []string{"-v", vol + ":/run/secrets"}})

	type record struct {
		Action  string            `json:"action"`
		Object  string            `json:"object"`
		Result  string            `json:"result"`
		Details map[string]string `json:"details"`
	}
	var refusal record
	s.eventually("refusal in the audit trail", 15*time.Second, func() bool {
		var recs []record
		if err := json.Unmarshal([]byte(s.srv.MustCLI(t, "", "audit", "ls", "--action", "delivery.apply", "-o", "json")), &recs); err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Object == "container:"+served.ID {
				refusal = r
				return true
			}
		}
		return false
	})
	if refusal.Result != "error" || !strings.Contains(refusal.Details["error"], "/run/secrets is a shared volume") ||
		!strings.Contains(refusal.Details["error"], "Coffer will not write secrets where other containers or the host can read them") {
		t.Fatalf("audit record = %+v", refusal)
	}
	for _, c := range []dockertest.ContainerRef{served, other} {
		if out, err := s.docker.Exec(t, c.ID, "ls", "-A", "/run/secrets"); err != nil || out != "" {
			t.Fatalf("%s sees %q in the volume (%v)", c.Name, out, err)
		}
	}
	// The host's view of the volume, through the runtime's shim (the test
	// may run in a mount namespace of its own).
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(served.PID) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	shim := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))[1]
	if des, err := os.ReadDir("/proc/" + shim + "/root" + volDir); err != nil || len(des) != 0 {
		t.Fatalf("host's volume directory: %d entries, %v", len(des), err)
	}
	if strings.Contains(s.agent.Logs(), value) || strings.Contains(s.srv.Logs(), value) {
		t.Error("value in logs")
	}
}
