package docker_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/internal/container"
)

// fakeEngine answers the few Docker API calls a Runtime makes, for the
// failures a real engine cannot be made to produce on demand. Containers
// "good" and "broken" run from images "sha256:good" and "sha256:broken";
// inspecting the second image fails with a 500.
func fakeEngine(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	containerJSON := func(id string) map[string]any {
		return map[string]any{
			"Id": id, "Name": "/" + id, "Image": "sha256:" + id,
			"State":  map[string]any{"Running": true, "Pid": 4242},
			"Config": map[string]any{"Image": "img-" + id, "Labels": map[string]string{"app": "payments", "own": "1"}},
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", "1.41")
		w.Header().Set("Content-Type", "application/json")
		p := r.URL.Path
		switch {
		case strings.HasSuffix(p, "/_ping"):
			_, _ = w.Write([]byte("OK"))
		case strings.HasSuffix(p, "/events"):
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case strings.HasSuffix(p, "/containers/json"):
			_ = json.NewEncoder(w).Encode([]map[string]any{{"Id": "broken"}, {"Id": "good"}})
		case strings.HasSuffix(p, "/containers/good/json"), strings.HasSuffix(p, "/containers/broken/json"):
			_ = json.NewEncoder(w).Encode(containerJSON(strings.Split(p, "/")[3]))
		case strings.HasSuffix(p, "/images/sha256:good/json"):
			_ = json.NewEncoder(w).Encode(map[string]any{"Id": "sha256:good", "Config": map[string]any{"Labels": map[string]string{"app": "payments"}}})
		default:
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"message":"image store broken"}`))
		}
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "unix://" + sock
}

// A container whose image cannot be read is skipped, never reported with
// its image's labels as its own, and does not stop the others being listed.
func TestImageInspectFailureSkipsOnlyThatContainer(t *testing.T) {
	host := fakeEngine(t)
	rt := newRuntime(t, host)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	if _, err := rt.Inspect(ctx, "broken"); err == nil || !strings.Contains(err.Error(), "image store broken") {
		t.Fatalf("Inspect broken = %v, want the image error", err)
	}
	ch, err := rt.Watch(ctx)
	if err != nil {
		t.Fatalf("Watch failed because of one container's image: %v", err)
	}
	seen := waitFor(t, ch, 5*time.Second, "Synced", func(ev container.Event) bool { return ev.Kind == container.Synced })
	synced := seen[len(seen)-1]
	if len(synced.Running) != 1 || synced.Running[0] != "good" {
		t.Fatalf("Synced = %v, want [good]", synced.Running)
	}
	good := seen[0].Info
	if len(seen) != 2 || good.ID != "good" || good.Labels["own"] != "1" || good.Labels["app"] != "" || good.ImageLabels["app"] != "payments" {
		t.Fatalf("events = %+v", seen)
	}
}
