package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"coffer/internal/dockertest"
)

// servedContainers is how many containers the stack's agent reports.
func (s *stack) servedContainers() int {
	s.t.Helper()
	var as []struct {
		Name       string `json:"name"`
		Containers int    `json:"containers"`
	}
	if err := json.Unmarshal([]byte(s.srv.MustCLI(s.t, "", "agent", "ls", "-o", "json")), &as); err != nil {
		s.t.Fatal(err)
	}
	n := 0
	for _, a := range as {
		n += a.Containers
	}
	return n
}

// hasMount reports whether container c has a mount at /run/secrets.
func hasMount(t *testing.T, c dockertest.ContainerRef) bool {
	t.Helper()
	mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", c.PID))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(mi), " /run/secrets ")
}

// Labels baked into an image are the image's author's, not the operator's:
// an image that ships the agent's opt-in label and a bound label is neither
// served nor given the secret; labels the operator sets with `docker run
// --label` are.
func TestImageLabelsNeitherOptInNorBind(t *testing.T) {
	s := newStack(t) // the agent serves only containers labelled coffer.test=<s.label>
	value := "e2e-imagelabel-" + randID()
	payments, web := "payments-"+s.label, "web-"+s.label
	s.srv.MustCLI(t, value, "secret", "put", "e2e/payments-key")
	s.srv.MustCLI(t, "", "bind", "create", "e2e-payments", "--secret", "e2e/payments-key",
		"--selector", fmt.Sprintf("app in (%s,%s)", payments, web))

	// A hostile image opts itself into the agent and claims the binding.
	optIn := "coffer-test/optin-" + randID() + ":1"
	s.docker.BuildImage(t, optIn, map[string]string{"coffer.test": s.label, "app": payments})
	// An image that claims the binding only.
	claims := "coffer-test/claims-" + randID() + ":1"
	s.docker.BuildImage(t, claims, map[string]string{"app": payments})

	// Run by nobody's choice: only the image's labels.
	hostile := s.docker.Run(t, dockertest.RunOpts{Image: optIn})
	// The operator repeats the image's own labels: Docker keeps no trace of
	// who set a label equal to the image's, so it counts as the image's
	// (docs/delivery.md).
	repeated := s.docker.Run(t, dockertest.RunOpts{Image: optIn, Labels: map[string]string{"coffer.test": s.label, "app": payments}})
	// The operator opts in; app comes from the image only.
	optedIn := s.run(dockertest.RunOpts{Image: claims})
	// The operator opts in and sets app: served and bound.
	bound := s.run(dockertest.RunOpts{Image: claims, Labels: map[string]string{"app": web}})

	s.waitContent(bound.ID, "payments-key", value)
	s.eventually("agent serving the two operator-labelled containers", 15*time.Second, func() bool { return s.servedContainers() == 2 })
	for _, c := range []dockertest.ContainerRef{hostile, repeated, optedIn} {
		if _, ok := s.read(c.ID, "payments-key"); ok {
			t.Errorf("container %s got the secret through its image's labels", c.Name)
		}
		if hasMount(t, c) {
			t.Errorf("container %s got a mount", c.Name)
		}
	}
	var audit string // delivery records are committed shortly after the ack
	s.eventually("the delivery to "+bound.Name+" audited", 10*time.Second, func() bool {
		audit = s.srv.MustCLI(t, "", "audit", "ls", "--action", "delivery.apply", "-o", "json")
		return strings.Contains(audit, bound.ID)
	})
	for _, c := range []dockertest.ContainerRef{hostile, repeated, optedIn} {
		if strings.Contains(audit, c.ID) {
			t.Errorf("audit shows a delivery to %s", c.Name)
		}
	}
	if strings.Contains(s.agent.Logs(), value) || strings.Contains(s.srv.Logs(), value) {
		t.Error("value in logs")
	}
}
