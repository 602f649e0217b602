package policy

import (
	"errors"
	"strings"
	"testing"
)

var (
	hexA    = strings.Repeat("a", 64)
	hexB    = strings.Repeat("b", 64)
	digestA = "sha256:" + hexA
	digestB = "sha256:" + hexB
)

func TestImagePatternCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{"busybox", "docker.io/library/busybox"},
		{"busybox:1", "docker.io/library/busybox:1"},
		{"library/busybox", "docker.io/library/busybox"},
		{"docker.io/busybox", "docker.io/library/busybox"},
		{"index.docker.io/busybox:1.36", "docker.io/library/busybox:1.36"},
		{"team/app", "docker.io/team/app"},
		{"registry.example.com/team/*", "registry.example.com/team/*"},
		{"Registry.Example.COM/team/app", "registry.example.com/team/app"},
		{"registry:5000/app", "registry:5000/app"},
		{"registry:5000/app:v1", "registry:5000/app:v1"},
		{"localhost/app", "localhost/app"},
		{"docker.io/library/*", "docker.io/library/*"},
		{"library/*", "docker.io/library/*"},
		{"**", "**"},
		{"**/app", "**/app"},
		{"docker.io/**", "docker.io/**"},
		{"*/team/app", "*/team/app"},
		{"ghcr.io/org/**/app:1.*", "ghcr.io/org/**/app:1.*"},
		{"app:V1_x-[0-9]", "docker.io/library/app:V1_x-[0-9]"},
		{digestA, digestA},
		{"@" + digestA, digestA},
		{"sha256:" + strings.ToUpper(hexA), digestA},
		{"SHA256:" + hexA, digestA},
		{"busybox@" + digestA, "docker.io/library/busybox@" + digestA},
		{"ghcr.io/org/app:1@" + digestA, "ghcr.io/org/app:1@" + digestA},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParseImagePattern(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			again, err := ParseImagePattern(p.String())
			if err != nil || again.String() != p.String() {
				t.Errorf("re-parse of %q: %q, %v", p.String(), again.String(), err)
			}
		})
	}
}

func TestImagePatternMatch(t *testing.T) {
	tests := []struct {
		pattern, image, digest string
		want                   bool
	}{
		// short names and docker.io/library/ normalisation
		{"busybox", "busybox", "", true},
		{"busybox", "busybox:1.36", "", true},
		{"busybox", "docker.io/library/busybox:latest", "", true},
		{"busybox", "index.docker.io/library/busybox", "", true},
		{"busybox:1", "busybox:1", "", true},
		{"busybox:1", "busybox:1.36", "", false},
		{"busybox:1*", "busybox:1.36", "", true},
		{"busybox:latest", "busybox", "", true},
		{"busybox:latest", "busybox@" + digestA, "", false},
		{"docker.io/library/busybox", "busybox", "", true},
		{"busybox", "ghcr.io/library/busybox", "", false},
		{"busybox", "myteam/busybox", "", false},
		{"myteam/busybox", "myteam/busybox:1", "", true},
		{"docker.io/library/*", "nginx", "", true},
		{"docker.io/library/*", "myteam/nginx", "", false},
		{"**:1.2", "ghcr.io/org/app:1.2", "", true},
		{"**:1.2", "nginx:1.3", "", false},
		// globs per segment
		{"registry.example.com/team/*", "registry.example.com/team/app:1", "", true},
		{"registry.example.com/team/*", "registry.example.com/team/sub/app", "", false},
		{"registry.example.com/team/*", "registry.example.com/other/app", "", false},
		{"registry.example.com/team/*", "evil.com/registry.example.com/team/app", "", false},
		{"registry.example.com/team/app-*", "registry.example.com/team/app-web", "", true},
		{"registry.example.com/team/app-?", "registry.example.com/team/app-1", "", true},
		{"registry.example.com/team/[ab]pp", "registry.example.com/team/bpp", "", true},
		{"registry.example.com/team/[^ab]pp", "registry.example.com/team/bpp", "", false},
		{"*.example.com/team/app", "registry.example.com/team/app", "", true},
		{"*.example.com/team/app", "registry.example.org/team/app", "", false},
		// "**" spans segments, zero included
		{"registry.example.com/**", "registry.example.com/team/sub/app:1", "", true},
		{"registry.example.com/team/**/app", "registry.example.com/team/app", "", true},
		{"registry.example.com/team/**/app", "registry.example.com/team/a/b/app", "", true},
		{"registry.example.com/team/**/app", "registry.example.com/team/a/b/web", "", false},
		{"**/app", "ghcr.io/org/app", "", true},
		{"**/app", "app", "", true},
		{"**", "anything.io/x/y:z", "", true},
		{"**/team/**", "r.io/team/x", "", true},
		{"**/team/**", "r.io/x/y", "", false},
		{"*/team/app", "team/app", "", true},
		{"*/team/app", "r.io:5000/team/app", "", true},
		{"*/team/app", "r.io/x/team/app", "", false},
		// host with port
		{"registry:5000/app", "registry:5000/app:1", "", true},
		{"registry:5000/app", "registry:5001/app:1", "", false},
		{"registry:*/app", "registry:5001/app", "", true},
		{"registry:5000/app:1", "registry:5000/app:1", "", true},
		{"registry:5000/app:1", "registry:5000/app:2", "", false},
		{"localhost/app", "localhost/app", "", true},
		{"localhost/app", "app", "", false},
		// digests
		{digestA, "busybox", digestA, true},
		{digestA, "busybox", digestB, false},
		{digestA, "busybox", "", false},
		{"@" + digestA, "anything", "docker.io/library/busybox@" + digestA, true},
		{digestA, "busybox@" + digestA, "", true},
		{digestA, "busybox@" + digestB, "", false},
		{digestA, "", "SHA256:" + strings.ToUpper(hexA), true},
		{"busybox@" + digestA, "busybox:1", digestA, true},
		{"busybox@" + digestA, "alpine:1", digestA, false},
		{"busybox@" + digestA, "busybox:1", digestB, false},
		{"busybox:1@" + digestA, "busybox:1", digestA, true},
		{"busybox:1@" + digestA, "busybox:2", digestA, false},
		// images the runtime reports by id do not match repository patterns
		{"busybox", hexA, "", false},
		{"busybox", "sha256:" + hexA, "", false},
		{digestA, hexA, digestA, true},
		{"busybox", "", "", false},
		{"busybox", "Not A Reference", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+"~"+tt.image+"~"+tt.digest, func(t *testing.T) {
			p, err := ParseImagePattern(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Match(tt.image, tt.digest); got != tt.want {
				t.Errorf("Match(%q, %q) = %v, want %v (pattern %s)", tt.image, tt.digest, got, tt.want, p)
			}
		})
	}
}

func TestImagePatternZero(t *testing.T) {
	var p ImagePattern
	if !p.IsZero() || p.String() != "" || !p.Match("anything", "") {
		t.Errorf("zero pattern: IsZero %v, String %q, should match everything", p.IsZero(), p.String())
	}
}

func TestImagePatternInvalid(t *testing.T) {
	tests := []struct{ in, msg string }{
		{"", "empty"},
		{"@", `digest "": only "sha256:"<64 hex digits> digests are supported`},
		{"busybox@", `digest ""`},
		{"@" + hexA, "only \"sha256:\"<64 hex digits> digests are supported"},
		{"busybox@sha512:" + hexA, "only \"sha256:\"<64 hex digits> digests are supported"},
		{"sha256:abc", "want \"sha256:\" followed by exactly 64 hex digits"},
		{"sha256:" + strings.Repeat("g", 64), "exactly 64 hex digits"},
		{"@sha256:" + hexA + "0", "exactly 64 hex digits"},
		{"busybox@" + digestA + "@" + digestB, "exactly 64 hex digits"},
		{"busybox:", "empty tag after ':'"},
		{"busybox:" + strings.Repeat("t", 129), "tag longer than 128 bytes"},
		{"busybox:a/b", `host "busybox:a": want host or host:port`},
		{"r.io:1:2/app", `host "r.io:1:2": want host or host:port`},
		{":5000/app", `want host or host:port`},
		{"busybox:a+b", `tag "a+b": use letters, digits`},
		{"busybox:[", `tag "[": bad glob`},
		{"BusyBox", "must be lower-case"},
		{"team/App", "must be lower-case"},
		{"team//app", "empty path segment"},
		{"/app", "empty path segment"},
		{"app/", "empty path segment"},
		{"r.io/a**", `"**" must be a whole path segment`},
		{"**/**", `repeated "**"`},
		{"**/a/**/b/**", `at most 2 "**" segments`},
		{"r.io/te am", "use lower-case letters, digits"},
		{"r.io/a\\*", "use lower-case letters, digits"},
		{"r.io/[a", "bad glob"},
		{"@busybox", "only \"sha256:\""},
		// A registry host "shA256" with a port would canonicalise to a
		// string that reads as a digest: it is taken for one, and refused.
		{"shA256:0/0", "want \"sha256:\" followed by exactly 64 hex digits"},
		{strings.Repeat("a", 513), "longer than 512 bytes"},
		// A lone "*" is refused rather than read as docker.io/library/*.
		{"*", `a lone "*" would mean Docker Hub's official images only (docker.io/library/*): leave the image pattern out`},
		{"*:1.2", `a lone "*"`},
		{"*@" + digestA, `a lone "*"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseImagePattern(tt.in)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
		})
	}
}

// A binding with --image '*' is refused with the reason, naming the field,
// instead of being stored as docker.io/library/* (official images only).
func TestBindingImageLoneStarIsRefused(t *testing.T) {
	b := Binding{Name: "web", Secret: "s", Selector: "app=web", Image: "*"}
	err := b.Normalize()
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `image "*": a lone "*"`) {
		t.Fatalf("Normalize = %v, %+v", err, b)
	}
	if b.Image != "*" {
		t.Fatalf("binding changed on error: %+v", b)
	}
	for _, ok := range []string{"**", "docker.io/library/*"} {
		b := Binding{Name: "web", Secret: "s", Selector: "app=web", Image: ok}
		if err := b.Normalize(); err != nil {
			t.Errorf("image %q: %v", ok, err)
		}
	}
}
