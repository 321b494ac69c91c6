package gitsource

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
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Real git servers for the tests: a working repository driven with the git
// CLI pushes into a bare repository that is served over git://, smart HTTP
// (with and without basic auth, with and without TLS), ssh, and file paths.

const testBranch = "main"

// gitRepo is a working repository and the bare repository it pushes to.
type gitRepo struct {
	t    testing.TB
	root string // served base path
	bare string // root/repo.git
	work string
	env  []string
	tick atomic.Int64 // commit clock, so identical trees still get new SHAs
}

func requireGit(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("SKIPPING: git CLI not installed; the gitsource tests need real git servers")
	}
}

func newGitRepo(t testing.TB) *gitRepo {
	t.Helper()
	requireGit(t)
	base := t.TempDir()
	r := &gitRepo{
		t:    t,
		root: filepath.Join(base, "srv"),
		work: filepath.Join(base, "work"),
	}
	r.bare = filepath.Join(r.root, "repo.git")
	home := filepath.Join(base, "home")
	for _, d := range []string{r.root, r.work, home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r.env = append(os.Environ(),
		"HOME="+home, "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=Test Author", "GIT_AUTHOR_EMAIL=author@example.com",
		"GIT_COMMITTER_NAME=Test Committer", "GIT_COMMITTER_EMAIL=committer@example.com",
	)
	r.run(r.root, "init", "--quiet", "--bare", "--initial-branch="+testBranch, r.bare)
	r.run(r.work, "init", "--quiet", "--initial-branch="+testBranch)
	// The bare repository borrows the working repository's objects, so a
	// "push" is a ref update in the bare repository (one fast git process
	// instead of a receive-pack round trip, ~0.4 s here). Servers still
	// serve a real bare repository, reading objects through alternates.
	alternates := filepath.Join(r.bare, "objects", "info", "alternates")
	if err := os.WriteFile(alternates, []byte(filepath.Join(r.work, ".git", "objects")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *gitRepo) run(dir string, args ...string) string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	n := r.tick.Add(1)
	date := fmt.Sprintf("%d +0000", 1_700_000_000+n)
	cmd.Env = append(r.env, "GIT_AUTHOR_DATE="+date, "GIT_COMMITTER_DATE="+date)
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// git runs a git command in the working repository.
func (r *gitRepo) git(args ...string) string {
	r.t.Helper()
	return r.run(r.work, args...)
}

// commit applies files (content "" deletes the path; a "+x:" prefix makes it
// executable), commits, force-pushes to testBranch and returns the SHA.
func (r *gitRepo) commit(msg string, files map[string]string) string {
	r.t.Helper()
	for name, content := range files {
		p := filepath.Join(r.work, filepath.FromSlash(name))
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
	r.git("add", "-A")
	r.git("commit", "--quiet", "--allow-empty", "-m", msg)
	r.push()
	return r.git("rev-parse", "HEAD")
}

// push force-pushes HEAD to testBranch (see newGitRepo).
func (r *gitRepo) push() {
	r.t.Helper()
	r.run(r.bare, "update-ref", "refs/heads/"+testBranch, r.git("rev-parse", "HEAD"))
}

// orphan replaces the branch with an unrelated one-commit history holding
// files only, and force-pushes it.
func (r *gitRepo) orphan(msg string, files map[string]string) string {
	r.t.Helper()
	r.git("checkout", "--quiet", "--orphan", fmt.Sprintf("orphan-%d", r.tick.Load()))
	r.git("rm", "-r", "--quiet", "--cached", "--ignore-unmatch", ".")
	r.git("clean", "-fdxq")
	return r.commit(msg, files)
}

// deleteBranch removes testBranch from the served repository.
func (r *gitRepo) deleteBranch() {
	r.t.Helper()
	r.run(r.bare, "update-ref", "-d", "refs/heads/"+testBranch)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// waitPort waits until something accepts on 127.0.0.1:port.
func waitPort(t testing.TB, port int, exited <-chan struct{}) {
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

// process is a server subprocess that the test can stop and start again.
type process struct {
	t      testing.TB
	name   string
	args   []string
	env    []string
	port   int
	cmd    *exec.Cmd
	exited chan struct{}
	log    strings.Builder
}

func (p *process) start() {
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
	waitPort(p.t, p.port, p.exited)
}

func (p *process) stop() {
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

// startGitDaemon serves r.root over git:// on a free port.
func startGitDaemon(t testing.TB, r *gitRepo) (*process, string) {
	t.Helper()
	port := freePort(t)
	p := &process{
		t:    t,
		name: "git",
		args: []string{"daemon", "--reuseaddr", "--base-path=" + r.root, "--export-all",
			"--enable=receive-pack", "--port=" + strconv.Itoa(port), "--listen=127.0.0.1", r.root},
		env:  r.env,
		port: port,
	}
	p.start()
	t.Cleanup(p.stop)
	return p, fmt.Sprintf("git://127.0.0.1:%d/repo.git", port)
}

// startHTTP serves r.root with git http-backend through net/http/cgi. With
// token set, requests need basic auth with that password; with useTLS the
// server speaks https and caPEM is its certificate.
func startHTTP(t testing.TB, r *gitRepo, useTLS bool, token string) (url string, caPEM []byte) {
	t.Helper()
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Skip("SKIPPING: git not installed")
	}
	var h http.Handler = &cgi.Handler{
		Path: gitPath,
		Args: []string{"http-backend"},
		Env:  []string{"GIT_PROJECT_ROOT=" + r.root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1"},
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

// sshServer is a real sshd serving git-upload-pack with key auth.
type sshServer struct {
	url        string // ssh://root@127.0.0.1:port/abs/repo.git
	keyFile    string // client private key
	knownHosts string // known_hosts with the server's host key
	port       int
}

// startSSHD runs /usr/sbin/sshd -D as root with generated host and client
// keys, or skips loudly when that is impossible here.
func startSSHD(t testing.TB, r *gitRepo) *sshServer {
	t.Helper()
	const sshd = "/usr/sbin/sshd"
	if os.Geteuid() != 0 {
		t.Skip("SKIPPING ssh transport test: sshd must run as root for key login (not root here)")
	}
	if _, err := os.Stat(sshd); err != nil {
		t.Skip("SKIPPING ssh transport test: " + sshd + " missing (apt-get install openssh-server)")
	}
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("SKIPPING ssh transport test: ssh-keygen missing (apt-get install openssh-client)")
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Skip("SKIPPING ssh transport test: cannot create /run/sshd: " + err.Error())
	}
	dir := t.TempDir()
	keygen := func(name string) {
		out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, name)).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	keygen("host")
	keygen("client")
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	port := freePort(t)
	s := &sshServer{
		port:       port,
		keyFile:    filepath.Join(dir, "client"),
		knownHosts: filepath.Join(dir, "known_hosts"),
		url:        fmt.Sprintf("ssh://root@127.0.0.1:%d%s", port, r.bare),
	}
	writeFile(t, filepath.Join(dir, "authorized_keys"), read("client.pub")+"\n")
	writeFile(t, s.knownHosts, fmt.Sprintf("[127.0.0.1]:%d %s\n", port, read("host.pub")))
	// sshd runs commands through the user's shell, and bash started by sshd
	// reads ~/.bashrc: point HOME at an empty dir so a heavy root profile
	// (pyenv & co) does not add seconds to every connection.
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "sshd_config")
	writeFile(t, conf, strings.Join([]string{
		"ListenAddress 127.0.0.1",
		"HostKey " + filepath.Join(dir, "host"),
		"PidFile " + filepath.Join(dir, "sshd.pid"),
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
		"StrictModes no", "UsePAM no", "PasswordAuthentication no",
		"KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
		"PermitRootLogin prohibit-password", "LogLevel ERROR", "SetEnv HOME=" + home, "",
	}, "\n"))
	p := &process{t: t, name: sshd, args: []string{"-D", "-e", "-f", conf, "-p", strconv.Itoa(port)}, env: r.env, port: port}
	p.start()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("sshd log:\n%s", p.log.String())
		}
	})
	return s
}

func writeFile(t testing.TB, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// stallServer accepts TCP connections and never answers, like a remote that
// hangs mid-handshake. It returns host:port.
func stallServer(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}
