package security_test

import (
	"testing"

	"coffer/test/security/hostile"
)

// A hostile image's labels are not the operator's: a container whose image
// claims app=web (LABEL in its Dockerfile) but that was not run with that
// label gets nothing from a binding on app=web.
func TestImageLabelsDoNotPassForContainerLabels(t *testing.T) {
	srv, admin := start(t)
	admin.PutSecret(t, "app/db", []byte("image-label-value"))
	admin.Bind(t, "db", map[string]any{"secret": "app/db", "selector": "app=web"})
	s := enroll(t, srv, admin, "node-img").Dial(t)
	c := hostile.Container("c-img", nil)
	c.ImageLabels = map[string]string{"app": "web"}
	s.Report(c)
	s.Report(hostile.Container("c-web", map[string]string{"app": "web"}))
	s.WaitFiles("c-img", "")
	s.WaitFiles("c-web", "db=app/db@1")
}

// An agent enrolled with a join token made by a token scoped to team-a/
// inherits that scope: whatever labels its containers claim, it gets no
// secret outside team-a/.
//
// AFTER MERGE: scope inheritance (join token scope -> fleet agent scope)
// and the scoped agent listing are the trust branch's; the broker's part
// is proven on its own by internal/broker TestAgentGetsNothingOutsideItsScope.
// Until trust is merged the server cannot give an agent a scope, and this
// test skips, detecting it by the scoped listing (a scoped token sees no
// unscoped agent once trust is in). After the merge it must pass.
func TestScopedAgentGetsNothingOutsideItsScope(t *testing.T) {
	srv, admin := start(t)
	admin.PutSecret(t, "team-a/db", []byte("team-a-value"))
	admin.PutSecret(t, "team-b/db", []byte("team-b-value"))
	admin.Bind(t, "a", map[string]any{"secret": "team-a/db", "selector": "team=a", "file": "a"})
	admin.Bind(t, "b", map[string]any{"secret": "team-b/db", "selector": "team=b", "file": "b"})

	scopedAdmin := admin.As(admin.NewToken(t, map[string]any{"role": "admin", "scope": "team-a/*"}))
	join := scopedAdmin.NewToken(t, map[string]any{"role": "agent", "scope": "team-a/*"})
	teamA := hostile.Enroll(t, srv, "team-a-node", join)
	enroll(t, srv, admin, "unscoped-node")
	seen := scopedAdmin.Agents(t)
	if _, ok := seen["unscoped-node"]; ok {
		t.Skip("AFTER MERGE: this server does not scope agents yet (a scoped token lists an unscoped agent); needs the trust branch")
	}
	if _, ok := seen["team-a-node"]; !ok {
		t.Fatalf("the scoped token does not see the agent enrolled with its own join token: %v", seen)
	}

	s := teamA.Dial(t)
	s.Report(hostile.Container("c-b", map[string]string{"team": "b"}))
	s.Report(hostile.Container("c-ab", map[string]string{"team": "a", "team-b": "x"}))
	s.Report(hostile.Container("c-both", map[string]string{"team": "b"}))
	s.WaitFiles("c-b", "")
	admin.Bind(t, "b-wide", map[string]any{"secret": "team-b/db", "selector": "team in (a,b)", "file": "bw"})
	s.WaitFiles("c-ab", "a=team-a/db@1")
	if got := s.Received(); len(got) != 1 || got[0] != "team-a/db@1" {
		t.Fatalf("the team-a agent received %v", got)
	}
}
