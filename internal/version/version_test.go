package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	bi := func(v string, settings ...debug.BuildSetting) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			return &debug.BuildInfo{Main: debug.Module{Version: v}, Settings: settings}, true
		}
	}
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	rev := debug.BuildSetting{Key: "vcs.revision", Value: "0123456789abcdef0123"}
	dirty := debug.BuildSetting{Key: "vcs.modified", Value: "true"}
	for _, tc := range []struct {
		name         string
		v, c         string
		read         func() (*debug.BuildInfo, bool)
		wantV, wantC string
	}{
		{"ldflags win", "v1.2.3", "abc", bi("v9.9.9", rev), "v1.2.3", "abc"},
		{"build info", "", "", bi("v0.5.0", rev), "v0.5.0", "0123456789ab"},
		{"dirty tree", "", "", bi("(devel)", rev, dirty), "(devel)", "0123456789ab-dirty"},
		{"nothing known", "", "", none, "(devel)", "unknown"},
		{"no vcs", "", "", bi(""), "(devel)", "unknown"},
	} {
		got := resolve(tc.v, tc.c, tc.read)
		if got.Version != tc.wantV || got.Commit != tc.wantC || got.Go != runtime.Version() {
			t.Errorf("%s: %+v", tc.name, got)
		}
	}
	if s := Get().String(); !strings.Contains(s, runtime.Version()) || !strings.Contains(s, "commit ") {
		t.Errorf("String() = %q", s)
	}
}
