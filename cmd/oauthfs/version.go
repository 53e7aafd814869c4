package main

import (
	"flag"
	"fmt"
	"io"
	"runtime/debug"
)

// version is set with -ldflags "-X main.version=..."; otherwise it comes
// from the module's build information.
var version = ""

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 && (v == "" || v == "(devel)") {
				v = "devel-" + s.Value[:12]
			}
		}
		if v != "" {
			return v
		}
	}
	return "devel"
}

var versionCommand = &command{
	name: "version", args: "",
	summary: "print the version",
	help:    "Print the version of oauthfs.",
	flags:   versionFlags,
}

// versionFlags declares the flags of oauthfs version.
func versionFlags(fs *flag.FlagSet) runFunc {
	return func(stdout, _ io.Writer) error {
		if fs.NArg() != 0 {
			return usageErrorf("version takes no arguments")
		}
		fmt.Fprintf(stdout, "oauthfs %s\n", versionString())
		return nil
	}
}
