// Package version holds the build's version, set with -ldflags at release time.
package version

import "runtime/debug"

// Version is the release version; "-X github.com/acgs-lite/acgs/internal/version.Version=..." overrides it.
var Version = "0.1.0"

// Commit is the VCS revision the binary was built from, when known.
func Commit() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}
