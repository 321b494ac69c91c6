package local

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving"
)

// A model is code: a pickle runs when it is loaded, a custom model's code
// on every request. The daemon holds credentials (Git tokens, webhook
// secrets, MLflow tokens) in its environment and owns the state
// directory, so a model server gets neither:
//
//   - an allow-listed environment (serverEnv): the manifest's env, what the
//     Python runtime and numeric libraries read (PATH, locale, time zone,
//     thread counts) and a HOME and TMPDIR of its own, a scratch directory
//     removed when the server ends; nothing else of the daemon's;
//   - when the daemon runs as root, another user (Options.RunAsUser,
//     DefaultRunAsUser unless set) without supplementary groups;
//   - its bundle and the server package as directory descriptors it
//     inherits, named /proc/self/fd/N on its command line: the user needs
//     no path to them, so the state directory may stay private to the
//     daemon (mode 0700, or under /root). The server writes its log to a
//     descriptor the daemon opened and accepts on a socket the daemon
//     bound; it needs no write permission anywhere in the state directory,
//     and bundles and the package belong to the daemon (0755/0644):
//     read-only to the server.

// DefaultRunAsUser is who model servers run as when the daemon runs as
// root and Options.RunAsUser is empty.
const DefaultRunAsUser = "nobody"

// The descriptors a model server inherits besides the listening socket,
// which modelserver.Command passes as fd 3.
const (
	packageFD = 4 // the directory holding the merlin_modelserver package
	bundleFD  = 5 // the model's bundle
)

// inheritedEnv are the daemon's variables a model server keeps, besides
// the locale's LC_*: what the Python runtime and numeric libraries read.
var inheritedEnv = []string{
	"PATH", "LANG", "LANGUAGE", "TZ",
	"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
}

// defaultPATH is a model server's PATH when the daemon has none.
const defaultPATH = "/usr/local/bin:/usr/bin:/bin"

// serverEnv is a model server's environment, sorted by name: the
// variables of the daemon's environment daemon that inheritedEnv allows
// (LC_* too), HOME and TMPDIR set to the server's scratch directory, then
// the manifest's env, which wins over both.
func serverEnv(daemon []string, scratch string, env []manifest.EnvVar) []string {
	vars := map[string]string{"PATH": defaultPATH}
	for _, kv := range daemon {
		k, v, ok := strings.Cut(kv, "=")
		if ok && (slices.Contains(inheritedEnv, k) || strings.HasPrefix(k, "LC_")) {
			vars[k] = v
		}
	}
	vars["HOME"], vars["TMPDIR"] = scratch, scratch
	for _, e := range env {
		vars[e.Name] = e.Value
	}
	out := make([]string, 0, len(vars))
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		out = append(out, k+"="+vars[k])
	}
	return out
}

// runAs is the user model servers run as when it is not the daemon's.
type runAs struct {
	name     string
	uid, gid uint32
}

// lookupRunAs decides who model servers run as for a daemon of effective
// uid euid: nil means the daemon's own user. A root daemon drops to
// configured, DefaultRunAsUser when empty ("root" keeps root); another
// daemon cannot change user, so configured may only name itself.
func lookupRunAs(euid int, configured string) (*runAs, error) {
	if configured == "" && euid != 0 {
		return nil, nil
	}
	name := cmp.Or(configured, DefaultRunAsUser)
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("runAsUser %q: %w; create the user or name another one", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("runAsUser %q: %w", name, err)
	}
	switch {
	case int(uid) == euid:
		return nil, nil
	case euid != 0:
		return nil, fmt.Errorf("runAsUser %q: the daemon runs as uid %d, not root, so it cannot start model servers as another user; they run as the daemon's user (omit runAsUser)", name, euid)
	}
	return &runAs{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
}

func (r *runAs) credential() *syscall.Credential {
	return &syscall.Credential{Uid: r.uid, Gid: r.gid, Groups: []uint32{}}
}

// check runs the interpreter as the user and imports what every model
// server imports, so that an interpreter or a package the user cannot
// reach (a virtualenv under /root, a package in root's ~/.local) fails
// the start with one clear error instead of every model server.
func (r *runAs) check(python string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-c", "import numpy, yaml")
	cmd.Dir, cmd.Env = "/", serverEnv(os.Environ(), os.TempDir(), nil)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.credential()}
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	msg := err.Error()
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); lines[len(lines)-1] != "" {
		msg = lines[len(lines)-1]
	}
	return fmt.Errorf("model servers run as %s (runAsUser), who cannot run %s -c 'import numpy, yaml': %s; "+
		"install the interpreter and its packages where %s can read them (Debian's python3-* packages), or set local.runAsUser",
		r.name, python, msg, r.name)
}

// sandbox is what one start of a model server is given.
type sandbox struct {
	// pkg and modelDir are the paths on the server's command line: those
	// of its descriptors.
	pkg, modelDir string
	pkgRoot       string // the real paths, to explain the server's errors
	bundle        string
	dirs          []*os.File // fds packageFD and bundleFD, in order
	scratch       string
	env           []string
	cred          *syscall.Credential
}

// newSandbox prepares a start of v's server: the descriptors of its
// package and bundle, and its scratch directory, owned by the server's
// user; start uses them.
func (l *Local) newSandbox(v serving.Version) (_ *sandbox, err error) {
	s := &sandbox{pkgRoot: filepath.Dir(l.serverPkg), bundle: v.Bundle}
	defer func() {
		if err != nil {
			s.close()
			removeScratch(s.scratch)
		}
	}()
	if l.runAs != nil {
		s.cred = l.runAs.credential()
		if err := readableToOthers(v.Bundle); err != nil {
			return nil, err
		}
	}
	for _, dir := range []string{s.pkgRoot, v.Bundle} {
		f, err := os.Open(dir)
		if err != nil {
			return nil, fmt.Errorf("open model server directory: %w", err)
		}
		s.dirs = append(s.dirs, f)
	}
	s.pkg = filepath.Join(fdPath(packageFD), filepath.Base(l.serverPkg))
	s.modelDir = fdPath(bundleFD)
	if s.scratch, err = os.MkdirTemp("", scratchPrefix+v.ID+"-"); err != nil {
		return nil, fmt.Errorf("scratch directory: %w", err)
	}
	if s.cred != nil {
		if err := os.Chown(s.scratch, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return nil, fmt.Errorf("scratch directory: %w", err)
		}
	}
	s.env = serverEnv(os.Environ(), s.scratch, v.Env)
	return s, nil
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// start gives cmd (modelserver.Command's, with the listener as fd 3) the
// sandbox's descriptors, environment and user, and starts it. The
// daemon's copies of the descriptors are closed either way; the scratch
// directory is removed when the server does not start.
func (s *sandbox) start(cmd *exec.Cmd) error {
	defer s.close()
	err := s.apply(cmd)
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		removeScratch(s.scratch)
	}
	return err
}

func (s *sandbox) apply(cmd *exec.Cmd) error {
	if len(cmd.ExtraFiles) != packageFD-3 {
		return fmt.Errorf("the command passes %d descriptors; want the listener alone", len(cmd.ExtraFiles))
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, s.dirs...)
	cmd.Env = s.env
	cmd.Dir = "/"
	if s.cred != nil {
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.Credential = s.cred
	}
	return nil
}

// close closes the daemon's copies of the descriptors.
func (s *sandbox) close() {
	for _, f := range s.dirs {
		f.Close()
	}
	s.dirs = nil
}

// unmask names the real directories in a server's exit message instead of
// its descriptors.
func (s *sandbox) unmask(err error) error {
	var ee *exitError
	if errors.As(err, &ee) {
		ee.msg = strings.NewReplacer(s.modelDir, s.bundle, fdPath(packageFD), s.pkgRoot).Replace(ee.msg)
	}
	return err
}

// readableToOthers lets another user list and enter a bundle's top
// directory (a builder's temporary directory is 0700); the files and
// subdirectories in it are the builder's 0644 and 0755.
func readableToOthers(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	if mode := st.Mode().Perm(); mode&0o005 != 0o005 {
		if err := os.Chmod(dir, mode|0o005); err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
	}
	return nil
}

// scratchPrefix starts the base name of every scratch directory, so that
// a path read back from a run record is removed only when it is one.
const scratchPrefix = "merlin-"

// removeScratch removes a server's scratch directory once the server has
// ended: only a directory named like one in the temporary directory
// (os.RemoveAll does not follow the symbolic links a model may have left
// in it).
func removeScratch(dir string) {
	if dir == "" || filepath.Dir(dir) != filepath.Clean(os.TempDir()) || !strings.HasPrefix(filepath.Base(dir), scratchPrefix) {
		return
	}
	_ = os.RemoveAll(dir)
}

// endScratch removes the scratch directory of a server that ended. A
// detached daemon leaves it: the server keeps running, and its record
// names the directory for the daemon that adopts it.
func (p *process) endScratch() {
	if p.l.detached.Load() {
		return
	}
	p.mu.Lock()
	dir := p.scratch
	p.scratch = ""
	p.mu.Unlock()
	removeScratch(dir)
}
