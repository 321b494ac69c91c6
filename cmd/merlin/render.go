package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"merlin.dev/merlin/manifest"
)

func runRender(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	target := fs.String("target", "local", "what to render for: local (the manifests with defaults applied)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: merlin render [--target local] [PATH]")
		fmt.Fprintln(stderr, "\nPrints the models declared under PATH (a merlin.yaml or a directory; default .)\nwith every default applied, as the daemon sees them.")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if fs.NArg() > 1 {
		fmt.Fprintln(stderr, "merlin render: takes at most one PATH")
		return exitUsage
	}
	if *target != "local" {
		fmt.Fprintf(stderr, "merlin render: unknown --target %q (local)\n", *target)
		return exitUsage
	}
	files, err := loadPaths(fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "merlin render: %v\n", err)
		return exitFailure
	}
	var models []*manifest.Model
	var errs manifest.ErrorList
	for _, f := range files {
		errs = append(errs, f.AllErrors()...)
		models = append(models, f.Models...)
	}
	if len(errs) > 0 {
		fmt.Fprintln(stderr, errs)
		return exitFailure
	}
	if err := manifest.Render(stdout, models); err != nil {
		fmt.Fprintf(stderr, "merlin render: %v\n", err)
		return exitFailure
	}
	return exitOK
}
