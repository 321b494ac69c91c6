package main

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) int {
	fmt.Fprintf(stdout, "merlin %s\n", buildVersion())
	return exitOK
}

// buildVersion describes the binary: the release version, or the VCS
// revision it was built from.
func buildVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return version
	}
	v := version
	if v == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		v = info.Main.Version
	}
	var rev, modified, when string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		case "vcs.time":
			when = s.Value
		}
	}
	if rev != "" {
		v += fmt.Sprintf(" (%.12s%s %s)", rev, modified, when)
	}
	return fmt.Sprintf("%s %s %s/%s", v, info.GoVersion, goos(info), goarch(info))
}

func goos(info *debug.BuildInfo) string   { return setting(info, "GOOS") }
func goarch(info *debug.BuildInfo) string { return setting(info, "GOARCH") }

func setting(info *debug.BuildInfo, key string) string {
	for _, s := range info.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return ""
}
