package modelserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// PackageName is the directory name of the model server's Python package.
const PackageName = "merlin_modelserver"

// Source is the model server's Python source: the package
// merlin_modelserver (its .py files only, never __pycache__).
//
//go:embed merlin_modelserver/*.py merlin_modelserver/loaders/*.py
var Source embed.FS

// DefaultPython is the interpreter used when Options.Python is empty: Debian's
// system Python, which is where the python3-* packages install.
const DefaultPython = "/usr/bin/python3"

// Exit codes of the model server besides 0 (clean stop), 1 (the model could
// not be loaded; stderr says why) and 2 (bad command line).
const (
	// ExitNoRuntime means the model's flavor (tensorflow, onnx, keras, ...)
	// cannot be served locally; it should go to the kubernetes target.
	ExitNoRuntime = 3
	// ExitMissingPackage means a Python package the model needs is not
	// installed; stderr names the apt package to install.
	ExitMissingPackage = 4
)

// Options describe one model server process.
type Options struct {
	// Python is the interpreter; empty means DefaultPython.
	Python string
	// ModelDir is the MLflow model directory (the one holding MLmodel).
	ModelDir string
	// Bundle names the directory ModelDir reaches when that is an
	// inherited descriptor's /proc/self/fd path; it is only shown (ps).
	Bundle string
	// Name is the model name served under /v1/models/NAME and /v2/models/NAME.
	Name string
	// Version is reported by the V2 API (model_version, versions).
	Version string
	// Workers is the number of pre-forked worker processes sharing the
	// listening socket and the loaded model; 0 means the server's default (1).
	Workers int
	// OrphanTimeout is how long the server keeps running without requests
	// once its parent has died (it may be adopted by a restarted daemon);
	// 0 means the server's default (5 minutes).
	OrphanTimeout time.Duration
}

// sourceFile is one file of Source.
type sourceFile struct {
	name string // slash-separated, relative to the package directory
	data []byte
}

// source lists Source's files in name order with the first 12 hex digits of
// a sha256 over their names and contents.
var source = sync.OnceValues(func() ([]sourceFile, string) {
	var files []sourceFile
	err := fs.WalkDir(Source, PackageName, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := Source.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, sourceFile{name: strings.TrimPrefix(p, PackageName+"/"), data: data})
		return nil
	})
	if err != nil {
		panic("modelserver: embedded source: " + err.Error())
	}
	slices.SortFunc(files, func(a, b sourceFile) int { return strings.Compare(a.name, b.name) })
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%d\x00", f.name, len(f.data))
		h.Write(f.data)
	}
	return files, hex.EncodeToString(h.Sum(nil))[:12]
})

// SourceHash is the first 12 hex digits of a sha256 over the package's file
// names and contents: the name of the directory Install writes.
func SourceHash() string {
	_, sum := source()
	return sum
}

// Install writes the Python package to dir/modelserver-<SourceHash>/
// merlin_modelserver unless an identical copy is there, and returns the path
// of that package directory, which Command runs.
//
// The directory is content-addressed, so servers started from an older
// version keep their files while a newer one is installed next to it (old
// directories are never removed here). It appears atomically: the files are
// written and synced in a temporary directory that is renamed into place, so
// concurrent callers and starting servers never see a partial package. A
// directory whose files differ from the embedded ones (corrupted) is
// replaced.
func Install(dir string) (string, error) {
	files, sum := source()
	root := filepath.Join(dir, "modelserver-"+sum)
	pkg := filepath.Join(root, PackageName)
	if installed(pkg, files) {
		return pkg, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("modelserver: %w", err)
	}
	removeStale(dir)
	tmp, err := os.MkdirTemp(dir, ".modelserver-"+sum+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("modelserver: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("modelserver: %w", err)
	}
	for _, f := range files {
		if err := writeSynced(filepath.Join(tmp, PackageName, filepath.FromSlash(f.name)), f.data); err != nil {
			return "", fmt.Errorf("modelserver: %w", err)
		}
	}
	if err := syncDirs(tmp, files); err != nil {
		return "", fmt.Errorf("modelserver: %w", err)
	}
	if err := os.Rename(tmp, root); err != nil {
		if !errors.Is(err, syscall.EEXIST) && !errors.Is(err, syscall.ENOTEMPTY) {
			return "", fmt.Errorf("modelserver: %w", err)
		}
		// There already is a directory: a concurrent Install's (fine) or a
		// corrupted one, moved aside and replaced.
		if installed(pkg, files) {
			return pkg, nil
		}
		old, err := os.MkdirTemp(dir, ".modelserver-"+sum+".old-*")
		if err != nil {
			return "", fmt.Errorf("modelserver: %w", err)
		}
		defer os.RemoveAll(old)
		if err := os.Rename(root, filepath.Join(old, "x")); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("modelserver: %w", err)
		}
		if err := os.Rename(tmp, root); err != nil {
			if installed(pkg, files) { // a concurrent Install won the race
				return pkg, nil
			}
			return "", fmt.Errorf("modelserver: %w", err)
		}
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return pkg, nil
}

// removeStale removes the temporary directories of Installs that crashed
// (or were killed) more than an hour ago.
func removeStale(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		stale := strings.Contains(name, ".tmp-") || strings.Contains(name, ".old-")
		if !strings.HasPrefix(name, ".modelserver-") || !stale {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Hour {
			_ = os.RemoveAll(filepath.Join(dir, name))
		}
	}
}

// installed reports whether pkg holds exactly the bytes of files (extra
// files, such as a __pycache__ written by someone else, do not matter).
func installed(pkg string, files []sourceFile) bool {
	for _, f := range files {
		have, err := os.ReadFile(filepath.Join(pkg, filepath.FromSlash(f.name)))
		if err != nil || !bytes.Equal(have, f.data) {
			return false
		}
	}
	return true
}

func writeSynced(name string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// syncDirs syncs the directories of tmp that hold files, so that the rename
// publishes complete entries after a crash.
func syncDirs(tmp string, files []sourceFile) error {
	dirs := map[string]bool{tmp: true, filepath.Join(tmp, PackageName): true}
	for _, f := range files {
		dirs[filepath.Join(tmp, PackageName, filepath.FromSlash(path.Dir(f.name)))] = true
	}
	for d := range dirs {
		f, err := os.Open(d)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// Command returns the command that serves o.ModelDir with the package at
// pkg (Install's result) on listener, an already listening TCP socket passed
// to the child as fd 3. The caller may close its copy of listener after
// Start.
//
// The command is "python3 -u -B PKG --model-dir ...": Python runs the
// package directory's __main__.py, which puts the package's parent directory
// (and not the package directory itself) first on sys.path and imports
// merlin_modelserver from there. Nothing depends on the environment or the
// working directory, which are left to the caller; -B keeps Python from
// writing __pycache__ into the package and model directories.
//
// The child runs in its own process group: a terminal's Ctrl-C to the daemon
// does not reach it (the daemon stops its servers itself, with SIGTERM), and
// it outlives a kill -9 of the daemon. Stdout and stderr are left unset.
func Command(pkg string, o Options, listener *os.File) *exec.Cmd {
	py := o.Python
	if py == "" {
		py = DefaultPython
	}
	args := []string{"-u", "-B", pkg,
		"--model-dir", o.ModelDir,
		"--name", o.Name,
		"--version", o.Version,
		"--fd", "3",
	}
	if o.Bundle != "" {
		args = append(args, "--bundle", o.Bundle)
	}
	if o.Workers > 0 {
		args = append(args, "--workers", strconv.Itoa(o.Workers))
	}
	if o.OrphanTimeout > 0 {
		args = append(args, "--orphan-timeout", strconv.FormatFloat(o.OrphanTimeout.Seconds(), 'f', -1, 64))
	}
	cmd := exec.Command(py, args...)
	cmd.ExtraFiles = []*os.File{listener}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// Python returns DefaultPython if it exists and can import numpy and yaml
// (python3-yaml reads MLmodel), or an error naming the Debian packages to
// install.
func Python() (string, error) {
	const install = "apt-get install -y python3 python3-numpy python3-yaml (and python3-sklearn python3-xgboost python3-cloudpickle for the model flavors)"
	if _, err := os.Stat(DefaultPython); err != nil {
		return "", fmt.Errorf("modelserver: %s not found: %s", DefaultPython, install)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, DefaultPython, "-c", "import numpy, yaml").CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		if msg == "" {
			msg = err.Error()
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) || ctx.Err() != nil {
			return "", fmt.Errorf("modelserver: %s cannot import numpy and yaml (%s): %s", DefaultPython, msg, install)
		}
		return "", fmt.Errorf("modelserver: running %s: %w", DefaultPython, err)
	}
	return DefaultPython, nil
}
