package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"merlin.dev/merlin/daemon"
	"merlin.dev/merlin/manifest"
)

func runValidate(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	format := fs.String("format", "text", "output format: text or json")
	config := fs.String("config", "", "daemon configuration file: also check what its target supports")
	target := fs.String("target", "", "also check what this target supports: local or kubernetes (default: the config's)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: merlin validate [--format text|json] [--config FILE | --target local|kubernetes] [PATH...]")
		fmt.Fprintln(stderr, "\nChecks merlin.yaml files. A directory is searched recursively for files named merlin.yaml;\na file is checked whatever its name. Exits 1 when any manifest is invalid, printing\none `path:line:col: field: message` line per problem. With a target (from --target or\nthe config's), manifests asking for what that target cannot do are errors too.")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if *format != "text" && *format != "json" {
		fmt.Fprintf(stderr, "merlin validate: unknown --format %q (text or json)\n", *format)
		return exitUsage
	}
	if *config != "" && *target == "" {
		cfg, err := daemon.LoadConfig(*config)
		if err != nil {
			fmt.Fprintf(stderr, "merlin validate: %v\n", err)
			return exitFailure
		}
		*target = cfg.Target
	}
	if *target != "" && *target != "local" && *target != "kubernetes" {
		fmt.Fprintf(stderr, "merlin validate: unknown --target %q (local or kubernetes)\n", *target)
		return exitUsage
	}
	files, err := loadPaths(fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "merlin validate: %v\n", err)
		return exitFailure
	}
	var errs manifest.ErrorList
	models := 0
	for _, f := range files {
		errs = append(errs, f.AllErrors()...)
		models += len(f.Models)
		for _, m := range f.Models {
			if err := m.CheckComparison(*target, *target != "kubernetes"); err != nil && len(m.Errors) == 0 {
				errs = append(errs, err)
			}
		}
	}
	if *format == "json" {
		report := struct {
			Valid  bool               `json:"valid"`
			Files  int                `json:"files"`
			Models int                `json:"models"`
			Errors manifest.ErrorList `json:"errors"`
		}{len(errs) == 0, len(files), models, append(manifest.ErrorList{}, errs...)}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			fmt.Fprintf(stderr, "merlin validate: %v\n", err)
			return exitFailure
		}
	} else {
		for _, e := range errs {
			fmt.Fprintln(stdout, e)
		}
		if len(errs) == 0 {
			fmt.Fprintf(stdout, "%d %s in %d %s: valid\n", models, plural(models, "model"), len(files), plural(len(files), "file"))
		}
	}
	if len(errs) > 0 {
		return exitFailure
	}
	return exitOK
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// loadPaths parses the manifests named on the command line (default "."),
// checking them together as one repository. Errors name files as the user
// wrote them; source paths resolve within the enclosing git repository (or
// the filesystem when there is none), as the daemon resolves them within
// the repository it watches.
func loadPaths(args []string) ([]*manifest.File, error) {
	if len(args) == 0 {
		args = []string{"."}
	}
	var files []*manifest.File
	seen := map[string]bool{}
	for _, arg := range args {
		arg = strings.TrimSuffix(strings.TrimSuffix(arg, "..."), string(filepath.Separator))
		if arg == "" {
			arg = "."
		}
		abs, err := filepath.Abs(arg)
		if err != nil {
			return nil, err
		}
		st, err := os.Stat(abs)
		if err != nil {
			return nil, err
		}
		root := repoRoot(abs)
		fsys := os.DirFS(root)
		rel := func(p string) string {
			r, _ := filepath.Rel(root, p)
			return filepath.ToSlash(r)
		}
		names := []string{rel(abs)}
		if st.IsDir() {
			if names, err = manifest.Find(fsys, rel(abs)); err != nil {
				return nil, err
			}
			if len(names) == 0 {
				return nil, fmt.Errorf("no %s found under %s", manifest.FileName, arg)
			}
		}
		for _, name := range names {
			if seen[name] {
				continue
			}
			seen[name] = true
			display := filepath.Join(arg, strings.TrimPrefix(name, rel(abs)))
			f, err := manifest.ReadFile(fsys, name, display)
			if err != nil {
				return nil, err
			}
			files = append(files, f)
		}
	}
	manifest.CheckUnique(files)
	return files, nil
}

// repoRoot returns the root of the git work tree holding path, or the
// filesystem root.
func repoRoot(path string) string {
	for dir := path; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, ".git")); err == nil {
			return dir
		}
		if dir == filepath.Dir(dir) {
			return dir
		}
	}
}
