package modelserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"merlin.dev/merlin/internal/atomicfile"
)

// Script is the model server's Python source (server.py).
//
//go:embed server.py
var Script []byte

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

// WriteScript writes Script to dir/server-<first 12 hex digits of its
// sha256>.py unless that file already holds it, and returns the path. The
// write is atomic (temp file + rename), so concurrent callers and readers
// never see a partial script.
func WriteScript(dir string) (string, error) {
	sum := sha256.Sum256(Script)
	path := filepath.Join(dir, "server-"+hex.EncodeToString(sum[:])[:12]+".py")
	if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, Script) {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("modelserver: %w", err)
	}
	if err := atomicfile.Write(path, Script, 0o644); err != nil {
		return "", fmt.Errorf("modelserver: %w", err)
	}
	return path, nil
}

// Command returns the command that serves o.ModelDir with the script at
// path script on listener, an already listening TCP socket passed to the
// child as fd 3. The caller may close its copy of listener after Start.
//
// The child runs in its own process group: a terminal's Ctrl-C to the daemon
// does not reach it (the daemon stops its servers itself, with SIGTERM), and
// it outlives a kill -9 of the daemon. Stdout and stderr are left unset.
func Command(script string, o Options, listener *os.File) *exec.Cmd {
	py := o.Python
	if py == "" {
		py = DefaultPython
	}
	args := []string{"-u", script,
		"--model-dir", o.ModelDir,
		"--name", o.Name,
		"--version", o.Version,
		"--fd", "3",
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

// Python returns DefaultPython if it exists and can import numpy, or an error
// naming the Debian packages to install.
func Python() (string, error) {
	const install = "apt-get install -y python3 python3-numpy (and python3-sklearn python3-xgboost python3-cloudpickle for the model flavors)"
	if _, err := os.Stat(DefaultPython); err != nil {
		return "", fmt.Errorf("modelserver: %s not found: %s", DefaultPython, install)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, DefaultPython, "-c", "import numpy").CombinedOutput()
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
			return "", fmt.Errorf("modelserver: %s cannot import numpy (%s): %s", DefaultPython, msg, install)
		}
		return "", fmt.Errorf("modelserver: running %s: %w", DefaultPython, err)
	}
	return DefaultPython, nil
}
