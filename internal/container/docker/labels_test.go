package docker

import (
	"fmt"
	"maps"
	"strings"
	"testing"
)

func TestOwnLabels(t *testing.T) {
	cases := []struct {
		name          string
		merged, image map[string]string
		want          map[string]string
	}{
		{"no labels", nil, nil, map[string]string{}},
		{"operator only", map[string]string{"app": "web"}, nil, map[string]string{"app": "web"}},
		{"image only", map[string]string{"app": "payments"}, map[string]string{"app": "payments"}, map[string]string{}},
		{"operator overrides image", map[string]string{"app": "web"}, map[string]string{"app": "payments"}, map[string]string{"app": "web"}},
		{"same key same value counts as the image's", map[string]string{"app": "payments", "tier": "1"},
			map[string]string{"app": "payments"}, map[string]string{"tier": "1"}},
		{"empty value overrides", map[string]string{"app": ""}, map[string]string{"app": "payments"}, map[string]string{"app": ""}},
		{"image label absent from the container", map[string]string{"x": "1"}, map[string]string{"app": "payments"}, map[string]string{"x": "1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ownLabels(tc.merged, tc.image)
			if got == nil || !maps.Equal(got, tc.want) {
				t.Fatalf("ownLabels(%v, %v) = %v, want %v", tc.merged, tc.image, got, tc.want)
			}
		})
	}
}

func TestImageLabelCacheBoundedAndCopied(t *testing.T) {
	var c imageLabelCache
	for i := range imageCacheEntries + 10 {
		c.put(fmt.Sprintf("sha256:%d", i), map[string]string{"i": fmt.Sprint(i)})
	}
	if n := c.len(); n != imageCacheEntries {
		t.Fatalf("cache holds %d images, want %d", n, imageCacheEntries)
	}
	if _, ok := c.get("sha256:0"); ok {
		t.Fatal("oldest entry not evicted")
	}
	last := fmt.Sprintf("sha256:%d", imageCacheEntries+9)
	ls, ok := c.get(last)
	if !ok || ls["i"] != fmt.Sprint(imageCacheEntries+9) {
		t.Fatalf("newest entry = %v, %v", ls, ok)
	}
	ls["i"] = "changed"
	if again, _ := c.get(last); again["i"] == "changed" {
		t.Fatal("get returned the cached map itself")
	}
	// A hostile image's huge labels are not kept.
	c.put("sha256:big", map[string]string{"k": strings.Repeat("x", imageCacheMaxBytes)})
	if _, ok := c.get("sha256:big"); ok {
		t.Fatal("oversized labels cached")
	}
}
