// Package version holds the build's version, set at link time:
//
//	go build -ldflags "-X github.com/lanmonitor/lanmonitor/internal/version.Version=v0.3.0"
package version

// Version is the release version, or "dev" for a build from source.
var Version = "dev"
