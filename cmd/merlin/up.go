package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"

	"merlin.dev/merlin/daemon"
	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/server"
	"merlin.dev/merlin/serving"
)

func runUp(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8080", "address for models, the API, the status page and /metrics")
	interval := fs.Duration("interval", 2*time.Second, "how often to poll the repository for new commits")
	stateDir := fs.String("state-dir", "", "where bundles, logs and state live (default: <repo>/.git/merlin)")
	workers := fs.Int("workers", 1, "processes per model server")
	idle := fs.Duration("idle-timeout", 10*time.Minute, "stop versions with replicas.min 0 after this long without requests")
	verbose := fs.Bool("v", false, "debug logging")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: merlin up [DIR] [--listen ADDR] [--interval D]")
		fmt.Fprintln(stderr, "\nServes the models declared in DIR's git repository (default .) on this machine, and\nredeploys them whenever a commit lands on its current branch. Commit a change to a\nmerlin.yaml or a model and watch it roll out.")
		fmt.Fprintln(stderr, "\nWith MERLIN_API_TOKEN set, rollout commands need it as a bearer token (the CLI sends it);\na --listen beyond loopback refuses to start without it.")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	dir := "."
	if fs.NArg() > 0 {
		dir = fs.Arg(0)
	}
	root, branch, err := gitCheckout(dir)
	if err != nil {
		fmt.Fprintf(stderr, "merlin up: %v\n", err)
		return exitFailure
	}
	if *stateDir == "" {
		*stateDir = filepath.Join(root, ".git", "merlin")
	}
	cfg := &daemon.Config{
		Repositories: []daemon.Repository{{Name: repoNameOf(root), URL: root, Branch: branch, Interval: manifest.Duration(*interval)}},
		Target:       "local",
		Local:        daemon.Local{Listen: *listen, StateDir: *stateDir, Workers: *workers, IdleTimeout: manifest.Duration(*idle)},
		Metrics:      daemon.Metrics{Provider: "local"},
	}
	// Rollout commands need the token the CLI sends, when one is set; a
	// --listen beyond loopback needs one (daemon.New says so).
	if os.Getenv(tokenEnv) != "" {
		cfg.Server.TokenEnv = tokenEnv
	}
	d, err := daemon.New(cfg, daemon.Options{CombinedListen: *listen, Version: buildVersion(), Logger: newLogger(stderr, *verbose)})
	if err != nil {
		fmt.Fprintf(stderr, "merlin up: %v\n", err)
		return exitFailure
	}
	base := "http://" + d.ModelsAddr()
	fmt.Fprintf(stdout, "merlin up: watching %s (branch %s), polling every %s\n", root, branch, *interval)
	fmt.Fprintf(stdout, "  status page  %s/\n  models API   %s/api/v1/models\n  metrics      %s/metrics\n", base, base, base)
	fmt.Fprintf(stdout, "  predict      %s/v1/models/NAME:predict (KServe V1), %s/v2/models/NAME/infer (V2)\n", base, base)
	fmt.Fprintln(stdout, "Commit to the repository to deploy; Ctrl-C stops everything.")
	go announce(ctx, d.API(), root, base, stdout)
	if err := d.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "merlin up: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// gitCheckout finds the git work tree holding dir and its current branch.
func gitCheckout(dir string) (root, branch string, err error) {
	repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true})
	if err != nil {
		return "", "", fmt.Errorf("%s is not in a git repository (git init && git add . && git commit -m 'models' first): %w", dir, err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", dir, err)
	}
	head, err := repo.Head()
	if err != nil {
		return "", "", fmt.Errorf("%s has no commits yet: commit your merlin.yaml and model first", dir)
	}
	if !head.Name().IsBranch() {
		return "", "", fmt.Errorf("%s: HEAD is detached; check out the branch to deploy", dir)
	}
	root, err = filepath.Abs(wt.Filesystem.Root())
	return root, head.Name().Short(), err
}

var unsafeName = regexp.MustCompile(`[^a-z0-9._-]+`)

func repoNameOf(root string) string {
	name := strings.Trim(unsafeName.ReplaceAllString(strings.ToLower(filepath.Base(root)), "-"), "-._")
	if name == "" {
		return "repo"
	}
	return name
}

func newLogger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// announce prints a ready-to-paste curl the first time each model serves.
func announce(ctx context.Context, api *server.Server, root, base string, w io.Writer) {
	shown := map[string]bool{}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, m := range api.Models() {
			if shown[m.Name] || !isServing(m) {
				continue
			}
			shown[m.Name] = true
			fmt.Fprintf(w, "\n%s is serving (%s). Try:\n  %s\n", m.Name, m.Versions[0].Version, curlFor(root, base, m))
		}
	}
}

func isServing(m serving.ModelStatus) bool {
	for _, v := range m.Versions {
		if v.Weight > 0 && v.State == serving.StateReady {
			return true
		}
	}
	return false
}

// curlFor builds a prediction request for a model from its input example
// or signature, read from the working tree.
func curlFor(root, base string, m serving.ModelStatus) string {
	path, body := "/v1/models/"+m.Name+":predict", `{"instances": [[...]]}`
	f, err := manifest.ReadFile(os.DirFS(root), m.File, m.File)
	var mm *manifest.Model
	if err == nil {
		for _, x := range f.Models {
			if x.Metadata.Name == m.Name {
				mm = x
			}
		}
	}
	if mm != nil {
		row := exampleRow(filepath.Join(root, filepath.Dir(m.File), mm.Spec.Source.Path))
		if mm.Spec.Protocol == manifest.ProtocolV2 {
			path = "/v2/models/" + m.Name + "/infer"
			body = fmt.Sprintf(`{"inputs": [{"name": "input-0", "shape": [1, %d], "datatype": "FP64", "data": %s}]}`, len(row), jsonRow(row))
		} else {
			body = fmt.Sprintf(`{"instances": [%s]}`, jsonRow(row))
		}
	}
	return fmt.Sprintf("curl -s %s%s -H 'Content-Type: application/json' -d '%s'", base, path, body)
}
