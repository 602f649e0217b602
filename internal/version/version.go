// Package version tells which build of Coffer is running. Version and
// Commit are set at link time by the Makefile
// (-X coffer/internal/version.Version=... -X coffer/internal/version.Commit=...);
// a plain `go build` or `go install` falls back to what the Go toolchain
// recorded in the binary (module version, VCS revision).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set with -ldflags -X; empty means "ask runtime/debug".
var (
	Version string
	Commit  string
)

// Info is a build's identity.
type Info struct {
	Version  string `json:"version"`
	Commit   string `json:"commit"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// Get returns the running binary's build information.
func Get() Info {
	return resolve(Version, Commit, debug.ReadBuildInfo)
}

// resolve fills what the linker did not set from the build info.
func resolve(v, c string, read func() (*debug.BuildInfo, bool)) Info {
	info := Info{Version: v, Commit: c, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := read(); ok {
		if info.Version == "" && bi.Main.Version != "" {
			info.Version = bi.Main.Version
		}
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if info.Commit == "" && rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if modified == "true" {
				rev += "-dirty"
			}
			info.Commit = rev
		}
	}
	if info.Version == "" {
		info.Version = "(devel)"
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
}

// String is one line: "v0.4.0 (commit 1a2b3c4d5e6f, go1.26.8, linux/amd64)".
func (i Info) String() string {
	return fmt.Sprintf("%s (commit %s, %s, %s)", i.Version, i.Commit, i.Go, i.Platform)
}
