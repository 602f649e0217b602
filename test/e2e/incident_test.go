package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"coffer/internal/dockertest"
)

// Incident response against a real agent and a real container: a leaked
// version revoked and replaced, its chain of custody, a lockdown, and the
// host quarantined (every file gone from its container, the agent revoked).
func TestIncidentResponse(t *testing.T) {
	s := newStack(t)
	v1, v2 := "inc-v1-"+randID(), "inc-v2-"+randID()
	s.srv.MustCLI(t, v1, "secret", "put", "e2e/inc")
	s.srv.MustCLI(t, "", "bind", "create", "e2e-inc", "--secret", "e2e/inc", "--selector", "app="+s.label, "--file", "inc")
	c := s.run(dockertest.RunOpts{Labels: map[string]string{"app": s.label}})
	s.waitContent(c.ID, "inc", v1)
	s.srv.MustCLI(t, v2, "secret", "put", "e2e/inc")
	s.waitContent(c.ID, "inc", v2)
	// The agent acknowledges after it wrote the file: wait for the server
	// to know, as an operator reading `secret show` would.
	s.eventually("the server knows the container holds v2", 15*time.Second, func() bool {
		var m struct {
			Holders []struct {
				ContainerID string `json:"container_id"`
				Version     uint64 `json:"version"`
				Pending     bool   `json:"pending"`
			} `json:"holders"`
		}
		json.Unmarshal([]byte(s.srv.MustCLI(t, "", "secret", "show", "e2e/inc", "-o", "json")), &m)
		return len(m.Holders) == 1 && m.Holders[0].ContainerID == c.ID && m.Holders[0].Version == 2 && !m.Holders[0].Pending
	})

	// Version 2 leaked: revoked and replaced at once.
	out := s.srv.MustCLI(t, "", "incident", "revoke-version", "e2e/inc", "--version", "2", "--reason", "pasted in a ticket", "--replace", "-o", "json")
	var rv struct {
		Replaced uint64 `json:"replaced"`
		HeldBy   []struct {
			ContainerID string `json:"container_id"`
			Agent       string `json:"agent"`
		} `json:"held_by"`
	}
	if err := json.Unmarshal([]byte(out), &rv); err != nil || rv.Replaced != 3 || len(rv.HeldBy) != 1 || rv.HeldBy[0].ContainerID != c.ID || rv.HeldBy[0].Agent != "e2e-host" {
		t.Fatalf("revoke-version: %v\n%s", err, out)
	}
	s.eventually("the replacement in the container", 15*time.Second, func() bool {
		got, ok := s.read(c.ID, "inc")
		return ok && got != v2 && got != v1 && got != ""
	})

	// The chain of custody names the container, its host and each version.
	out = s.srv.MustCLI(t, "", "incident", "report", "--secret", "e2e/inc", "-o", "json")
	var rep struct {
		Holdings []struct {
			ContainerID string `json:"container_id"`
			Version     uint64 `json:"version"`
		} `json:"holdings"`
		Hosts    []string `json:"hosts"`
		Verified bool     `json:"verified"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.Verified || len(rep.Hosts) != 1 {
		t.Fatalf("report: %v\n%s", err, out)
	}
	var versions []uint64
	for _, h := range rep.Holdings {
		if h.ContainerID == c.ID {
			versions = append(versions, h.Version)
		}
	}
	if len(versions) != 3 || versions[0] != 1 || versions[1] != 2 || versions[2] != 3 {
		t.Fatalf("holdings of the container: %v\n%s", versions, out)
	}
	if human := s.srv.MustCLI(t, "", "incident", "report", "--secret", "e2e/inc", "--since", "1h"); !strings.Contains(human, "VERIFIED") || !strings.Contains(human, "incident.revoke_version") {
		t.Fatalf("report:\n%s", human)
	}

	// Lockdown: an operator's write is refused (exit 4), an admin's is not.
	op := strings.TrimSpace(s.srv.MustCLI(t, "", "token", "create", "--role", "operator", "--ttl", "1h"))
	s.srv.MustCLI(t, "", "incident", "lockdown", "--reason", "breach under investigation")
	if _, errOut, code := s.srv.CLI(t, "x", "secret", "put", "e2e/other", "--token", op); code != 4 || !strings.Contains(errOut, "lockdown") {
		t.Fatalf("operator write in lockdown: exit %d: %s", code, errOut)
	}
	if st := s.srv.MustCLI(t, "", "incident", "status"); !strings.Contains(st, "LOCKDOWN") {
		t.Fatalf("status:\n%s", st)
	}
	s.srv.MustCLI(t, "", "incident", "lift")

	// Quarantine: the container loses every file at once, the agent is revoked.
	out = s.srv.MustCLI(t, "", "incident", "quarantine", "e2e-host", "--reason", "IDS alert", "-o", "json")
	var q struct {
		Acknowledged bool `json:"acknowledged"`
		Held         []struct {
			ContainerID string `json:"container_id"`
		} `json:"held"`
	}
	if err := json.Unmarshal([]byte(out), &q); err != nil || !q.Acknowledged || len(q.Held) != 1 || q.Held[0].ContainerID != c.ID {
		t.Fatalf("quarantine: %v\n%s", err, out)
	}
	s.waitAbsent(c.ID, "inc")
	if ls := s.srv.MustCLI(t, "", "agent", "ls"); strings.Contains(ls, "e2e-host") {
		t.Fatalf("the quarantined agent is still listed:\n%s", ls)
	}
	audit := s.srv.MustCLI(t, "", "audit", "ls", "--action", "incident.*", "-o", "json")
	for _, a := range []string{"incident.revoke_version", "incident.lockdown", "incident.lift", "incident.quarantine", "IDS alert"} {
		if !strings.Contains(audit, a) {
			t.Errorf("audit lacks %s", a)
		}
	}
	for _, v := range []string{v1, v2} {
		if strings.Contains(s.srv.Logs(), v) || strings.Contains(audit, v) {
			t.Error("a value in the server's logs or audit")
		}
	}
}
