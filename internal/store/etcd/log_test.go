package etcd

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// The etcd client's warnings and errors reach Coffer's logger; its
// chatter below warning does not.
func TestClientLogsToSlog(t *testing.T) {
	var buf bytes.Buffer
	z := zapToSlog(slog.New(slog.NewTextHandler(&buf, nil))).With(zap.String("endpoint", "e1"))
	z.Info("chatter")
	z.Warn("retrying", zap.Int("attempt", 2))
	z.Error("failed")
	out := buf.String()
	for _, want := range []string{"level=WARN msg=retrying component=etcd-client attempt=2 endpoint=e1", "level=ERROR msg=failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "chatter") {
		t.Errorf("info reached the log:\n%s", out)
	}
}
