// Command merlin ships ML models from Git: it validates and renders
// merlin.yaml manifests, and runs the daemon that serves the models they
// declare.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and found problems (invalid manifests, a failed request)
	exitUsage   = 2 // the command line is wrong
)

// command is one `merlin` subcommand.
type command struct {
	name    string
	args    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"up", "[DIR] [--listen ADDR] [--interval D]", "serve DIR's git repository on this machine, redeploying on every commit", runUp},
		{"run", "--config FILE", "run the daemon", runRun},
		{"status", "[MODEL] [--addr URL]", "show models, versions, traffic and rollouts of a running daemon", runStatus},
		{"promote", "MODEL", "promote a model's candidate now", runCommand("promote")},
		{"rollback", "MODEL", "roll a model's candidate back now", runCommand("rollback")},
		{"pause", "MODEL", "pause a model's rollouts", runCommand("pause")},
		{"resume", "MODEL", "resume a model's rollouts", runCommand("resume")},
		{"validate", "[--format text|json] [PATH...]", "check merlin.yaml manifests (files or directories; PATH/... is accepted)", runValidate},
		{"render", "[--target local|kubernetes] [PATH]", "print manifests with defaults applied, or the kubernetes objects they deploy", runRender},
		{"version", "", "print build information", runVersion},
	}
}

// run executes one command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "merlin: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "merlin ships ML models from Git.")
	fmt.Fprintln(w, "\nUsage:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  merlin %-9s %s\n      %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintln(w, "\nRun `merlin COMMAND -h` for a command's flags.")
}

// parseFlags parses a subcommand's flags, writing errors and -h output to
// stderr. It returns ok=false with the exit code when the command should
// stop.
//
// Flags may follow positional arguments (merlin up DIR --listen ADDR), as
// SPEC writes them; the positional arguments are then in fs.Args().
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(stderr)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK, false
			}
			return exitUsage, false
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			positional = append(positional, args[1:]...)
			break
		}
		positional, args = append(positional, args[0]), args[1:]
	}
	_ = fs.Parse(append([]string{"--"}, positional...))
	return exitOK, true
}
