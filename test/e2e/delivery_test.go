package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"coffer/internal/dockertest"
	"coffer/test/testkit"
)

func TestDeliveryRotationRevocation(t *testing.T) {
	s := newStack(t)
	v1, v2 := "e2e-v1-"+randID(), "e2e-v2-"+randID()
	other := "coffer-test/other-" + randID() + ":1"
	if _, err := s.docker.Docker(t, "tag", s.docker.Image(t), other); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.docker.Docker(t, "rmi", other) })

	s.srv.MustCLI(t, v1, "secret", "put", "e2e/db-password")
	s.srv.MustCLI(t, "", "bind", "create", "e2e-db", "--secret", "e2e/db-password", "--selector", "app="+s.label,
		"--image", "coffer-test/busybox*", "--mode", "0440", "--uid", "1000", "--gid", "2000")

	var bound []dockertest.ContainerRef
	for i := range 3 {
		bound = append(bound, s.run(dockertest.RunOpts{Name: fmt.Sprintf("coffer-e2e-%s-%d", s.label, i), Labels: map[string]string{"app": s.label}}))
	}
	unbound := s.run(dockertest.RunOpts{Labels: map[string]string{"app": "something-else"}})
	wrongImage := s.run(dockertest.RunOpts{Labels: map[string]string{"app": s.label}, Image: other})

	for _, c := range bound {
		s.waitContent(c.ID, "db-password", v1)
	}
	st, err := s.docker.Exec(t, bound[0].ID, "stat", "-c", "%a %u %g", "/run/secrets/db-password")
	if err != nil || strings.TrimSpace(st) != "440 1000 2000" {
		t.Fatalf("mode/owner = %q, %v", st, err)
	}
	mounts, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", bound[0].PID))
	var line string
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, " /run/secrets ") {
			line = l
		}
	}
	for _, opt := range []string{"nosuid", "nodev", "noexec", "tmpfs", "noswap"} {
		if !strings.Contains(line, opt) {
			t.Errorf("/run/secrets mount lacks %s: %q", opt, line)
		}
	}
	for _, c := range []dockertest.ContainerRef{unbound, wrongImage} {
		if _, ok := s.read(c.ID, "db-password"); ok {
			t.Fatalf("container %s got a secret it is not bound to", c.Name)
		}
		if mi, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", c.PID)); strings.Contains(string(mi), " /run/secrets ") {
			t.Fatalf("container %s bound to nothing got a mount", c.Name)
		}
	}

	// Rotation: new content everywhere, no restart, rollout visible.
	s.srv.MustCLI(t, v2, "secret", "put", "e2e/db-password")
	for _, c := range bound {
		s.waitContent(c.ID, "db-password", v2)
	}
	s.eventually("rollout complete", 10*time.Second, func() bool {
		out := s.srv.MustCLI(t, "", "secret", "show", "e2e/db-password")
		return strings.Contains(out, "3 holding, 0 pending")
	})
	out := s.srv.MustCLI(t, "", "secret", "show", "e2e/db-password")
	if !strings.Contains(out, bound[0].Name) || !strings.Contains(out, "e2e-host") {
		t.Fatalf("secret show lacks holders:\n%s", out)
	}

	// Delete the binding: files gone. A new binding: delivered at once.
	s.srv.MustCLI(t, "", "bind", "rm", "e2e-db")
	for _, c := range bound {
		s.waitAbsent(c.ID, "db-password")
	}
	s.srv.MustCLI(t, "", "bind", "create", "e2e-db2", "--secret", "e2e/db-password", "--selector", "app="+s.label, "--file", "db")
	for _, c := range bound {
		s.waitContent(c.ID, "db", v2)
	}
	if _, ok := s.read(wrongImage.ID, "db"); !ok {
		t.Fatal("binding without image pattern did not reach the other image")
	}

	// Delete the secret: revoked everywhere.
	s.srv.MustCLI(t, "", "secret", "rm", "e2e/db-password")
	for _, c := range bound {
		s.waitAbsent(c.ID, "db")
	}

	// Audit trail has every delivery with container and version (delivery
	// records are committed in groups, shortly after the acknowledgement).
	var audit string
	s.eventually("deliveries audited", 10*time.Second, func() bool {
		audit = s.srv.MustCLI(t, "", "audit", "ls", "--secret", "e2e/db-password", "-o", "json")
		return strings.Contains(audit, "delivery.revoke")
	})
	for _, action := range []string{"delivery.apply", "delivery.rotate", "delivery.revoke"} {
		if !strings.Contains(audit, action) {
			t.Errorf("audit lacks %s", action)
		}
	}
	if !strings.Contains(audit, bound[0].ID) {
		t.Error("audit lacks the container id")
	}

	// Stopped container: nothing left.
	s.srv.MustCLI(t, "v3", "secret", "put", "e2e/db-password")
	s.waitContent(bound[0].ID, "db", "v3")
	s.docker.Docker(t, "rm", "-f", bound[0].ID)
	s.eventually("removal audited", 10*time.Second, func() bool {
		return strings.Contains(s.srv.MustCLI(t, "", "audit", "ls", "--action", "delivery.remove"), "delivery.remove")
	})

	// Leak check over everything: Docker's data root (its temp dir
	// included), the server's data dir, the agent's state dir and every
	// process's temp dir (TMPDIR, inside s.dir), docker inspect, the logs.
	s.srv.Stop()
	s.agent.Stop()
	for _, v := range []string{v1, v2} {
		for _, root := range []string{"/var/lib/docker", s.dir} {
			if hits := grepTree(root, v); len(hits) > 0 {
				t.Errorf("value found on disk: %v", hits)
			}
		}
		for _, c := range bound[1:] {
			ins, _ := s.docker.Docker(t, "inspect", c.ID)
			if strings.Contains(ins, v) {
				t.Error("value in docker inspect")
			}
		}
		if strings.Contains(s.srv.Logs(), v) || strings.Contains(s.agent.Logs(), v) {
			t.Error("value in logs")
		}
	}
}

func TestExistingTmpfsIsReused(t *testing.T) {
	s := newStack(t)
	s.srv.MustCLI(t, "tmpfs-value", "secret", "put", "e2e/tok")
	s.srv.MustCLI(t, "", "bind", "create", "e2e-tok", "--secret", "e2e/tok", "--selector", "app="+s.label)
	c := s.run(dockertest.RunOpts{Labels: map[string]string{"app": s.label}, Tmpfs: []string{"/run/secrets"}})
	s.waitContent(c.ID, "tok", "tmpfs-value")
	mounts, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", c.PID))
	if n := strings.Count(string(mounts), " /run/secrets "); n != 1 {
		t.Fatalf("%d mounts at /run/secrets, want 1 (the container's own)", n)
	}
}

func TestAgentRestartAndServerKill(t *testing.T) {
	s := newStack(t)
	s.srv.MustCLI(t, "r1", "secret", "put", "e2e/r")
	s.srv.MustCLI(t, "", "bind", "create", "e2e-r", "--secret", "e2e/r", "--selector", "app="+s.label)
	c := s.run(dockertest.RunOpts{Labels: map[string]string{"app": s.label}})
	s.waitContent(c.ID, "r", "r1")

	// Agent restart: re-discovers the container, no duplicate mount, and a
	// rotation made while it was down arrives.
	s.agent.Stop()
	s.srv.MustCLI(t, "r2", "secret", "put", "e2e/r")
	if got, _ := s.read(c.ID, "r"); got != "r1" {
		t.Fatalf("value changed while the agent was down: %q", got)
	}
	s.agent = s.startAgent("")
	s.waitContent(c.ID, "r", "r2")
	mounts, _ := os.ReadFile("/proc/" + strconv.Itoa(c.PID) + "/mountinfo")
	if n := strings.Count(string(mounts), " /run/secrets "); n != 1 {
		t.Fatalf("%d mounts at /run/secrets after agent restart, want 1", n)
	}

	// Server kill -9: the container keeps its value; after restart a
	// change converges within seconds.
	s.srv.Kill()
	time.Sleep(500 * time.Millisecond)
	if got, _ := s.read(c.ID, "r"); got != "r2" {
		t.Fatalf("value lost while the server was down: %q", got)
	}
	s.srv = testkit.StartServerAt(t, s.srv.Addr, s.srv.DataDir)
	s.srv.MustCLI(t, "r3", "secret", "put", "e2e/r")
	s.waitContent(c.ID, "r", "r3")
}
