package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"merlin.dev/merlin/daemon"
)

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	config := fs.String("config", "merlin.config.yaml", "daemon configuration file")
	verbose := fs.Bool("v", false, "debug logging")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: merlin run --config FILE")
		fmt.Fprintln(stderr, "\nRuns the daemon: watches the configured repositories and serves their models.")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	cfg, err := daemon.LoadConfig(*config)
	if err != nil {
		fmt.Fprintf(stderr, "merlin run: %v\n", err)
		return exitFailure
	}
	d, err := daemon.New(cfg, daemon.Options{Version: buildVersion(), Logger: newLogger(stderr, *verbose)})
	if err != nil {
		fmt.Fprintf(stderr, "merlin run: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "merlin run: models on http://%s, API and status on http://%s\n", d.ModelsAddr(), d.APIAddr())
	if err := d.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "merlin run: %v\n", err)
		return exitFailure
	}
	return exitOK
}
