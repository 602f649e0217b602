package security_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/agent"
	"coffer/internal/audit"
	"coffer/internal/container"
	"coffer/internal/container/fake"
	"coffer/internal/deliver/memory"
	"coffer/internal/secret"
	"coffer/test/security/hostile"
)

// A value larger than an agent can receive (gRPC's default 4 MiB for an
// agent that announces no limit) used to end its stream on every
// reconnect, so that the host's other secrets stopped arriving. Now that
// value is not sent to it (the failure is audited), everything else is,
// and coffer-agent, which announces its limit, receives it.
func TestValueTooLargeForAnAgentDoesNotWedgeItsStream(t *testing.T) {
	srv, admin := start(t, "--max-value-size", "8388608")
	big := bytes.Repeat([]byte("L"), 5<<20)
	admin.PutSecret(t, "app/big", big)
	admin.PutSecret(t, "app/small", []byte("small-value"))
	admin.Bind(t, "big", map[string]any{"secret": "app/big", "selector": "big=1"})
	admin.Bind(t, "small", map[string]any{"secret": "app/small", "selector": "app=web"})

	old := enroll(t, srv, admin, "old-agent").Dial(t, hostile.WithMetadata(cofferv1.FeaturesKey, cofferv1.FeatureBatch))
	old.Report(hostile.Container("o-big", map[string]string{"app": "web", "big": "1"}))
	old.Report(hostile.Container("o-small", map[string]string{"app": "web"}))
	old.WaitFiles("o-big", "small=app/small@1")
	old.WaitFiles("o-small", "small=app/small@1")
	admin.WaitAudit(t, "delivery.send", 1, func(e audit.Event) bool {
		return e.Result == "error" && e.Details["container_id"] == "o-big" && e.Details["secret"] == "app/big" &&
			strings.Contains(e.Details["error"], "receive limit")
	})
	admin.PutSecret(t, "app/small", []byte("small-value-2"))
	old.WaitFiles("o-small", "small=app/small@2")
	if ended, err := old.Closed(100 * time.Millisecond); ended {
		t.Fatalf("the old agent's stream ended: %v", err)
	}

	// coffer-agent itself (real code, simulated runtime and deliverer).
	caPEM, err := os.ReadFile(srv.CA)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, err := agent.LoadOrEnroll(context.Background(), srv.Addr, caPEM, filepath.Join(dir, "state"), "real-agent", admin.JoinToken(t))
	if err != nil {
		t.Fatal(err)
	}
	rt, d := fake.New(), memory.New(memory.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	a := agent.New(agent.Config{Server: srv.Addr, CAPEM: caPEM, Cert: cert, StateDir: filepath.Join(dir, "state"), Runtime: rt, Deliverer: d})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	rt.Start(container.Info{ID: "r-big", Name: "r-big", Labels: map[string]string{"app": "web", "big": "1"}, PID: 1})
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	if err := d.WaitFiles(wctx, "r-big", func(fs map[string]secret.File) bool {
		return bytes.Equal(fs["big"].Value, big) && string(fs["small"].Value) == "small-value-2"
	}); err != nil {
		t.Fatalf("coffer-agent did not get the large value: %v", err)
	}
}
