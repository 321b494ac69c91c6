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
	target := fs.String("target", "local", "what to render for: local (the manifests with defaults applied) or kubernetes (the objects applied)")
	var k kubeRenderFlags
	fs.StringVar(&k.config, "config", "", "kubernetes: daemon config whose kubernetes block gives namespace, gateway, host, registry")
	fs.StringVar(&k.namespace, "namespace", "", "kubernetes: namespace of the objects")
	fs.StringVar(&k.gateway, "gateway", "", "kubernetes: Istio Gateway [namespace/]name of the VirtualServices")
	fs.StringVar(&k.host, "host", "", "kubernetes: host name the VirtualServices answer for")
	fs.StringVar(&k.registry, "registry", "", "kubernetes: registry of the modelcar images of source.path models")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: merlin render [--target local|kubernetes] [flags] [PATH]")
		fmt.Fprintln(stderr, "\nPrints the models declared under PATH (a merlin.yaml or a directory; default .)\nwith every default applied, as the daemon sees them; with --target kubernetes,\nthe InferenceService and VirtualService each model's first deployment applies.")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if fs.NArg() > 1 {
		fmt.Fprintln(stderr, "merlin render: takes at most one PATH")
		return exitUsage
	}
	if *target != "local" && *target != "kubernetes" {
		fmt.Fprintf(stderr, "merlin render: unknown --target %q (local or kubernetes)\n", *target)
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
	if *target == "kubernetes" {
		cfg, err := k.settings()
		if err != nil {
			fmt.Fprintf(stderr, "merlin render: %v\n", err)
			return exitUsage
		}
		// The kubernetes target does not compare predictions: a rollout
		// judged on agreement would hold there forever.
		for _, m := range models {
			if err := m.CheckComparison(*target, false); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			fmt.Fprintln(stderr, errs)
			return exitFailure
		}
		if err := renderKube(stdout, models, cfg); err != nil {
			fmt.Fprintf(stderr, "merlin render: %v\n", err)
			return exitFailure
		}
		return exitOK
	}
	if err := manifest.Render(stdout, models); err != nil {
		fmt.Fprintf(stderr, "merlin render: %v\n", err)
		return exitFailure
	}
	return exitOK
}
