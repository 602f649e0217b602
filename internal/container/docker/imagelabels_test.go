package docker_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/internal/container"
	"coffer/internal/container/docker"
	"coffer/internal/dockertest"
)

// logBuffer collects a runtime's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func runtimeWithLogs(t *testing.T, host string) (*docker.Runtime, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	rt, err := docker.New(docker.Config{Host: host, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	return rt, logs
}

// withoutOwner drops dockertest's own bookkeeping label.
func withoutOwner(ls map[string]string) map[string]string {
	out := maps.Clone(ls)
	maps.DeleteFunc(out, func(k, _ string) bool { return strings.HasPrefix(k, "coffer.test.owner") })
	return out
}

// A label baked into an image is the image's, not the container's: an image
// cannot claim labels that bindings or --only-labels trust.
func TestImageLabelsAreNotTheContainers(t *testing.T) {
	env := dockertest.Require(t)
	ref := fmt.Sprintf("coffer-test/labelled-%d-%d:1", os.Getpid(), time.Now().UnixNano())
	imageLabels := map[string]string{"app": "payments", "coffer.enable": "true"}
	imageID := env.BuildImage(t, ref, imageLabels)

	plain := env.Run(t, dockertest.RunOpts{Image: ref})
	web := env.Run(t, dockertest.RunOpts{Image: ref, Labels: map[string]string{"app": "web", "tier": "front"}})
	same := env.Run(t, dockertest.RunOpts{Image: ref, Labels: map[string]string{"app": "payments"}})

	rt := newRuntime(t, env.Host)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cases := []struct {
		name string
		c    dockertest.ContainerRef
		want map[string]string // Labels, without dockertest's owner label
	}{
		{"image labels only", plain, map[string]string{}},
		{"operator label with another value stays", web, map[string]string{"app": "web", "tier": "front"}},
		// Docker keeps no trace of who set a label that equals the image's.
		{"operator label equal to the image's counts as the image's", same, map[string]string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			info, err := rt.Inspect(ctx, tc.c.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got := withoutOwner(info.Labels); !maps.Equal(got, tc.want) {
				t.Errorf("Labels = %v, want %v", got, tc.want)
			}
			if !maps.Equal(info.ImageLabels, imageLabels) {
				t.Errorf("ImageLabels = %v, want %v", info.ImageLabels, imageLabels)
			}
			if info.ImageDigest != imageID {
				t.Errorf("ImageDigest = %s, want %s", info.ImageDigest, imageID)
			}
		})
	}

	// Watch (list and events) tells the same: it is what the agent reads.
	ch, err := rt.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := waitFor(t, ch, 10*time.Second, "Synced", func(ev container.Event) bool { return ev.Kind == container.Synced })
	listed := map[string]container.Info{}
	for _, ev := range seen {
		if ev.Kind == container.Started {
			listed[ev.Info.ID] = ev.Info
		}
	}
	if info := listed[plain.ID]; info.Labels["app"] != "" || info.Labels["coffer.enable"] != "" || info.ImageLabels["app"] != "payments" {
		t.Errorf("listed plain container = %+v", info)
	}
	started := env.Run(t, dockertest.RunOpts{Image: ref})
	seen = waitFor(t, ch, 10*time.Second, "Started", func(ev container.Event) bool {
		return ev.Kind == container.Started && ev.Info.ID == started.ID
	})
	if info := seen[len(seen)-1].Info; len(withoutOwner(info.Labels)) != 0 || !maps.Equal(info.ImageLabels, imageLabels) {
		t.Errorf("started container = %+v", info)
	}
}

// When the image is deleted, its labels cannot be told from the container's:
// none is trusted as the operator's, and a warning names the container.
func TestImageGoneLabelsFailSafe(t *testing.T) {
	env := dockertest.Require(t)
	ref := fmt.Sprintf("coffer-test/doomed-%d-%d:1", os.Getpid(), time.Now().UnixNano())
	imageID := env.BuildImage(t, ref, map[string]string{"app": "payments"})
	id, err := env.Docker(t, "create", "--network", "none", "--label", "owner=ops", ref, "sleep", "3600")
	if id != "" {
		t.Cleanup(func() { env.Remove(t, id) })
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// A runtime that saw the image before it went still knows its labels
	// (an image id names one content forever).
	before, _ := runtimeWithLogs(t, env.Host)
	other := env.Run(t, dockertest.RunOpts{Image: ref})
	if info, err := before.Inspect(ctx, other.ID); err != nil || info.ImageLabels["app"] != "payments" {
		t.Fatalf("Inspect with the image present = %+v, %v", info, err)
	}
	env.Remove(t, other.ID)

	// Docker deletes an image only no running container uses; a created
	// one may then start without it.
	if _, err := env.Docker(t, "rmi", "-f", ref); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Docker(t, "start", id); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Docker(t, "image", "inspect", imageID); err == nil {
		t.Fatal("image still there")
	}
	if info, err := before.Inspect(ctx, id); err != nil || info.Labels["owner"] != "ops" || info.Labels["app"] != "" {
		t.Fatalf("Inspect from the cache = %+v, %v", info, err)
	}

	rt, logs := runtimeWithLogs(t, env.Host)
	info, err := rt.Inspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Labels) != 0 || info.Labels == nil {
		t.Errorf("Labels = %#v, want empty: nothing can be proven the operator's", info.Labels)
	}
	if info.ImageLabels["app"] != "payments" || info.ImageLabels["owner"] != "ops" {
		t.Errorf("ImageLabels = %v, want the merged set", info.ImageLabels)
	}
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, id) {
		t.Errorf("no warning naming the container: %q", l)
	}
}
