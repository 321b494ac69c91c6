// Package gittest runs real git servers for tests: a working repository
// driven with the git CLI pushes into a bare repository that is served
// over git:// (git daemon), smart HTTP (git http-backend, with and without
// basic auth and TLS), and file paths.
package gittest

import (
	"context"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Branch is the branch the repositories serve.
const Branch = "main"

// Repo is a working repository and the bare repository it pushes to.
type Repo struct {
	t testing.TB
	// Root is the served base path; Bare is Root/repo.git; Work is the
	// working repository the tests commit in.
	Root, Bare, Work string
	// Env is the environment git runs with (isolated HOME and identity).
	Env  []string
	tick atomic.Int64 // commit clock, so identical trees still get new SHAs
	// onHTTP, when set, sees every request StartHTTP's server receives.
	onHTTP atomic.Pointer[func(*http.Request)]
}

// OnHTTP makes f see every request of the smart HTTP server (StartHTTP)
// before it is served: tests time when a client starts fetching.
func (r *Repo) OnHTTP(f func(*http.Request)) { r.onHTTP.Store(&f) }

// RequireGit skips the test loudly when the git CLI is missing.
func RequireGit(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("SKIPPING: git CLI not installed; the gitsource tests need real git servers")
	}
}

// NewRepo creates an empty repository pair under t.TempDir().
func NewRepo(t testing.TB) *Repo {
	t.Helper()
	RequireGit(t)
	base := t.TempDir()
	r := &Repo{
		t:    t,
		Root: filepath.Join(base, "srv"),
		Work: filepath.Join(base, "work"),
	}
	r.Bare = filepath.Join(r.Root, "repo.git")
	home := filepath.Join(base, "home")
	for _, d := range []string{r.Root, r.Work, home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r.Env = append(os.Environ(),
		"HOME="+home, "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=Test Author", "GIT_AUTHOR_EMAIL=author@example.com",
		"GIT_COMMITTER_NAME=Test Committer", "GIT_COMMITTER_EMAIL=committer@example.com",
	)
	r.run(r.Root, "init", "--quiet", "--bare", "--initial-branch="+Branch, r.Bare)
	r.run(r.Work, "init", "--quiet", "--initial-branch="+Branch)
	// The bare repository borrows the working repository's objects, so a
	// "push" is a ref update in the bare repository (one fast git process
	// instead of a receive-pack round trip, ~0.4 s here). Servers still
	// serve a real bare repository, reading objects through alternates.
	alternates := filepath.Join(r.Bare, "objects", "info", "alternates")
	if err := os.WriteFile(alternates, []byte(filepath.Join(r.Work, ".git", "objects")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *Repo) run(dir string, args ...string) string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	n := r.tick.Add(1)
	date := fmt.Sprintf("%d +0000", 1_700_000_000+n)
	cmd.Env = append(r.Env, "GIT_AUTHOR_DATE="+date, "GIT_COMMITTER_DATE="+date)
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Git runs a git command in the working repository.
func (r *Repo) Git(args ...string) string {
	r.t.Helper()
	return r.run(r.Work, args...)
}

// Commit applies files (content "" deletes the path; a "+x:" prefix makes it
// executable), commits, force-pushes to Branch and returns the SHA.
func (r *Repo) Commit(msg string, files map[string]string) string {
	r.t.Helper()
	sha := r.commitFiles(msg, files)
	r.Push()
	return sha
}

// commitFiles is Commit without the push.
func (r *Repo) commitFiles(msg string, files map[string]string) string {
	r.t.Helper()
	for name, content := range files {
		p := filepath.Join(r.Work, filepath.FromSlash(name))
		if content == "" {
			if err := os.RemoveAll(p); err != nil {
				r.t.Fatal(err)
			}
			continue
		}
		mode := os.FileMode(0o644)
		if rest, ok := strings.CutPrefix(content, "+x:"); ok {
			content, mode = rest, 0o755
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			r.t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			r.t.Fatal(err)
		}
	}
	r.Git("add", "-A")
	r.Git("commit", "--quiet", "--allow-empty", "-m", msg)
	return r.Git("rev-parse", "HEAD")
}

// CommitDir copies the directory tree src into the working repository
// at dst (replacing what was there), commits and pushes it.
func (r *Repo) CommitDir(msg, src, dst string) string {
	r.t.Helper()
	files := map[string]string{}
	target := filepath.Join(r.Work, filepath.FromSlash(dst))
	if err := os.RemoveAll(target); err != nil {
		r.t.Fatal(err)
	}
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		files[filepath.ToSlash(filepath.Join(dst, rel))] = string(data)
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return r.Commit(msg, files)
}

// Push force-pushes HEAD to Branch (see NewRepo).
func (r *Repo) Push() {
	r.t.Helper()
	r.run(r.Bare, "update-ref", "refs/heads/"+Branch, r.Git("rev-parse", "HEAD"))
}

// Orphan replaces the branch with an unrelated one-commit history holding
// files only, and force-pushes it.
func (r *Repo) Orphan(msg string, files map[string]string) string {
	r.t.Helper()
	r.Git("checkout", "--quiet", "--orphan", fmt.Sprintf("orphan-%d", r.tick.Load()))
	r.Git("rm", "-r", "--quiet", "--cached", "--ignore-unmatch", ".")
	r.Git("clean", "-fdxq")
	return r.Commit(msg, files)
}

// PullHead commits files on a branch pull-<n> (off the current Branch
// head the first time, then on top of its previous commit), publishes it
// in the served repository as refs/pull/<n>/head, as GitHub does, returns
// to Branch and returns the commit's SHA. Branch is not changed.
func (r *Repo) PullHead(n int, files map[string]string) string {
	r.t.Helper()
	branch := fmt.Sprintf("pull-%d", n)
	if r.run(r.Work, "branch", "--list", branch) == "" {
		r.Git("checkout", "--quiet", "-b", branch, Branch)
	} else {
		r.Git("checkout", "--quiet", branch)
	}
	sha := r.commitFiles("pull request "+strconv.Itoa(n), files)
	r.run(r.Bare, "update-ref", fmt.Sprintf("refs/pull/%d/head", n), sha)
	r.Git("checkout", "--quiet", Branch)
	return sha
}

// DeletePullHead removes refs/pull/<n>/head from the served repository.
func (r *Repo) DeletePullHead(n int) {
	r.t.Helper()
	r.run(r.Bare, "update-ref", "-d", fmt.Sprintf("refs/pull/%d/head", n))
}

// DeleteBranch removes Branch from the served repository.
func (r *Repo) DeleteBranch() {
	r.t.Helper()
	r.run(r.Bare, "update-ref", "-d", "refs/heads/"+Branch)
}

// FreePort returns a TCP port free on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitPort waits until something accepts on 127.0.0.1:port.
func WaitPort(t testing.TB, port int, exited <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("server on port %d exited before accepting", port)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("nothing accepts on port %d", port)
}

// Server is a server subprocess that the test can stop and start again.
type Server struct {
	t      testing.TB
	name   string
	args   []string
	env    []string
	port   int
	cmd    *exec.Cmd
	exited chan struct{}
	log    strings.Builder
}

// NewServer describes a server command listening on port; Start runs it.
func NewServer(t testing.TB, name string, args, env []string, port int) *Server {
	return &Server{t: t, name: name, args: args, env: env, port: port}
}

// Log returns what the server printed.
func (p *Server) Log() string { return p.log.String() }

// Start starts (or restarts) the server and waits until it accepts.
func (p *Server) Start() {
	p.t.Helper()
	p.cmd = exec.Command(p.name, p.args...)
	p.cmd.Env = p.env
	p.cmd.Stdout, p.cmd.Stderr = &p.log, &p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // kill its children too
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	p.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(p.cmd, p.exited)
	WaitPort(p.t, p.port, p.exited)
}

// Stop kills the server (and its children).
func (p *Server) Stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		p.t.Errorf("%s did not exit", p.name)
	}
	p.cmd = nil
}

// StartDaemon serves r.Root with `git daemon` on a free port and returns
// the server and the repository URL.
func StartDaemon(t testing.TB, r *Repo) (*Server, string) {
	t.Helper()
	port := FreePort(t)
	p := &Server{
		t:    t,
		name: "git",
		args: []string{"daemon", "--reuseaddr", "--base-path=" + r.Root, "--export-all",
			"--enable=receive-pack", "--port=" + strconv.Itoa(port), "--listen=127.0.0.1", r.Root},
		env:  r.Env,
		port: port,
	}
	p.Start()
	t.Cleanup(p.Stop)
	return p, fmt.Sprintf("git://127.0.0.1:%d/repo.git", port)
}

// StartHTTP serves r.Root with git http-backend through net/http/cgi. With
// token set, requests need basic auth with that password; with useTLS the
// server speaks https and caPEM is its certificate.
func StartHTTP(t testing.TB, r *Repo, useTLS bool, token string) (url string, caPEM []byte) {
	t.Helper()
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Skip("SKIPPING: git not installed")
	}
	var h http.Handler = &cgi.Handler{
		Path: gitPath,
		Args: []string{"http-backend"},
		Env:  []string{"GIT_PROJECT_ROOT=" + r.Root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1"},
	}
	if token != "" {
		next := h
		h = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if _, pass, ok := req.BasicAuth(); !ok || pass != token {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, req)
		})
	}
	served := h
	h = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if f := r.onHTTP.Load(); f != nil {
			(*f)(req)
		}
		served.ServeHTTP(w, req)
	})
	var srv *httptest.Server
	if useTLS {
		srv = httptest.NewTLSServer(h)
		caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	} else {
		srv = httptest.NewServer(h)
	}
	t.Cleanup(srv.Close)
	return srv.URL + "/repo.git", caPEM
}
