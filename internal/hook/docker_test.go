package hook

import (
	"context"
	"errors"
	"testing"

	"coffer/internal/container"
)

type fakeEngine struct {
	info container.Info
	err  error
}

func (f fakeEngine) Creating(context.Context, string) (container.Info, error) { return f.info, f.err }

func TestDockerRequired(t *testing.T) {
	for name, tc := range map[string]struct {
		labels, image map[string]string
		want          bool
	}{
		"none":                      {},
		"own label":                 {labels: map[string]string{RequireLabel: "true"}, want: true},
		"image's label":             {image: map[string]string{RequireLabel: "true"}, want: true},
		"own false over image's":    {labels: map[string]string{RequireLabel: "false"}, image: map[string]string{RequireLabel: "true"}},
		"not exactly true":          {labels: map[string]string{RequireLabel: "TRUE"}},
		"the Kubernetes annotation": {labels: map[string]string{RequireAnnotation: "true"}},
	} {
		t.Run(name, func(t *testing.T) {
			info := container.Info{ID: "x", Labels: tc.labels, ImageLabels: tc.image}
			c, err := Docker{Engine: fakeEngine{info: info}}.Creating(context.Background(), "x")
			if err != nil {
				t.Fatal(err)
			}
			if got := c.PodAnnotations[RequireAnnotation] == "true"; got != tc.want {
				t.Errorf("required %v, want %v", got, tc.want)
			}
			if c.SandboxID != "" || c.Info.ID != "x" {
				t.Errorf("Creating = %+v", c)
			}
		})
	}
	boom := errors.New("boom")
	if _, err := (Docker{Engine: fakeEngine{err: boom}}).Creating(context.Background(), "x"); !errors.Is(err, boom) {
		t.Errorf("err %v", err)
	}
}
