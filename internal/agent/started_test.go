package agent

import (
	"maps"
	"testing"

	"coffer/internal/container"
)

// The report carries the image's labels apart from the container's own,
// so that the server can tell an operator's label from an image author's.
func TestStartedMsgKeepsImageLabelsApart(t *testing.T) {
	info := container.Info{ID: "c1", Name: "web", Labels: map[string]string{"app": "web"},
		ImageLabels: map[string]string{"team": "x"}, Image: "img:1", ImageDigest: "sha256:00"}
	c := startedMsg(info).GetStarted().GetContainer()
	if !maps.Equal(c.GetLabels(), info.Labels) || !maps.Equal(c.GetImageLabels(), info.ImageLabels) ||
		c.GetId() != "c1" || c.GetName() != "web" || c.GetImage() != "img:1" || c.GetImageDigest() != "sha256:00" {
		t.Fatalf("reported %+v for %+v", c, info)
	}
}
