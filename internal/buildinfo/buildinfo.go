// Package buildinfo holds the version stamped into every codervpn build.
package buildinfo

// Version is set at link time with
// -ldflags "-X github.com/codervpn/codervpn/internal/buildinfo.Version=v1.2.3".
// Builds that are not stamped (go test, go run) report "dev".
var Version = "dev"
