package gitsource

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/internal/gittest"
	"merlin.dev/merlin/internal/testlog"
)

// newSource builds a Source for url with a fresh cache dir; the logs are
// returned so tests can check them for secrets, and printed on failure.
func newSource(t testing.TB, url string, mutate func(*Config)) (*Source, *testlog.Buffer) {
	t.Helper()
	logs := &testlog.Buffer{}
	cfg := Config{Name: "test", URL: url, Branch: gittest.Branch, CacheDir: t.TempDir()}
	if mutate != nil {
		mutate(&cfg)
	}
	src, err := New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("source logs:\n%s", logs.String())
		}
	})
	return src, logs
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustFetch(t testing.TB, src *Source, want string) Revision {
	t.Helper()
	rev, err := src.Fetch(testCtx(t))
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if want != "" && rev.SHA != want {
		t.Fatalf("Fetch = %s, want %s", rev.SHA, want)
	}
	return rev
}

func mustHead(t testing.TB, src *Source, want string) {
	t.Helper()
	head, err := src.Head(testCtx(t))
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if head != want {
		t.Fatalf("Head = %s, want %s", head, want)
	}
}

func mustChanged(t testing.TB, src *Source, from, to string, want ...string) {
	t.Helper()
	got, err := src.Changed(testCtx(t), from, to)
	if err != nil {
		t.Fatalf("Changed: %v", err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Changed(%.7s, %.7s) = %q, want %q", from, to, got, want)
	}
}

func mustRead(t testing.TB, src *Source, sha, name, want string) {
	t.Helper()
	fsys, err := src.Tree(sha)
	if err != nil {
		t.Fatalf("Tree(%s): %v", sha, err)
	}
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		t.Fatalf("ReadFile(%s): %v", name, err)
	}
	if string(b) != want {
		t.Fatalf("%s = %q, want %q", name, b, want)
	}
}

// exerciseSource runs the basic contract against any transport: initial
// fetch, Tree contents, a new commit seen by Head, Changed exact.
func exerciseSource(t *testing.T, repo *gittest.Repo, src *Source) {
	t.Helper()
	first := repo.Commit("first", map[string]string{
		"merlin.yaml":         "models: [a, b]\n",
		"models/a/model.py":   "print('a')\n",
		"models/b/weights.md": "b\n",
	})
	mustHead(t, src, first)
	rev := mustFetch(t, src, first)
	if rev.Message != "first" || !strings.Contains(rev.Author, "Test Author") || rev.Time.IsZero() {
		t.Fatalf("revision metadata = %+v", rev)
	}
	mustRead(t, src, first, "models/a/model.py", "print('a')\n")
	mustChanged(t, src, "", first, "merlin.yaml", "models/a/model.py", "models/b/weights.md")

	second := repo.Commit("second", map[string]string{
		"models/a/model.py":   "print('a2')\n",
		"models/b/weights.md": "",
		"models/c/new.txt":    "c\n",
	})
	mustHead(t, src, second)
	mustFetch(t, src, second)
	mustChanged(t, src, first, second, "models/a/model.py", "models/b/weights.md", "models/c/new.txt")
	mustRead(t, src, second, "models/a/model.py", "print('a2')\n")
	mustRead(t, src, first, "models/a/model.py", "print('a')\n") // old revision still readable

	// Nothing new: fetch is a no-op that returns the same head.
	mustFetch(t, src, second)
}

func TestTransports(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		setup func(t *testing.T, r *gittest.Repo) (string, func(*Config))
	}{
		{"git-daemon", func(t *testing.T, r *gittest.Repo) (string, func(*Config)) {
			_, url := gittest.StartDaemon(t, r)
			return url, nil
		}},
		{"http", func(t *testing.T, r *gittest.Repo) (string, func(*Config)) {
			url, _ := gittest.StartHTTP(t, r, false, "")
			return url, nil
		}},
		{"https-token-cabundle", func(t *testing.T, r *gittest.Repo) (string, func(*Config)) {
			url, ca := gittest.StartHTTP(t, r, true, "s3cret-token")
			return url, func(c *Config) { c.Auth.Token = "s3cret-token"; c.CABundle = ca }
		}},
		{"https-token-in-url-insecure", func(t *testing.T, r *gittest.Repo) (string, func(*Config)) {
			url, _ := gittest.StartHTTP(t, r, true, "url-token")
			return strings.Replace(url, "https://", "https://x-access-token:url-token@", 1),
				func(c *Config) { c.InsecureSkipTLS = true }
		}},
		{"file-url", func(_ *testing.T, r *gittest.Repo) (string, func(*Config)) {
			return "file://" + r.Bare, nil
		}},
		{"plain-path", func(_ *testing.T, r *gittest.Repo) (string, func(*Config)) {
			return r.Bare, nil
		}},
		{"ssh-known-hosts", func(t *testing.T, r *gittest.Repo) (string, func(*Config)) {
			s := startSSHD(t, r)
			return s.url, func(c *Config) { c.Auth.SSHKeyFile = s.keyFile; c.Auth.SSHKnownHosts = s.knownHosts }
		}},
		{"ssh-any-host-key", func(t *testing.T, r *gittest.Repo) (string, func(*Config)) {
			s := startSSHD(t, r)
			return s.url, func(c *Config) { c.Auth.SSHKeyFile = s.keyFile }
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			repo := gittest.NewRepo(t)
			url, mutate := tc.setup(t, repo)
			src, logs := newSource(t, url, mutate)
			exerciseSource(t, repo, src)
			for _, secret := range []string{"s3cret-token", "url-token"} {
				if strings.Contains(logs.String(), secret) || strings.Contains(src.URL(), secret) {
					t.Fatalf("secret %q leaked into logs or URL %q", secret, src.URL())
				}
			}
		})
	}
}

func TestSSHWrongHostKey(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	s := startSSHD(t, repo)
	repo.Commit("first", map[string]string{"a": "a"})
	other := gittest.NewRepo(t) // a second sshd gives a different host key
	s2 := startSSHD(t, other)
	src, _ := newSource(t, s.url, func(c *Config) {
		c.Auth.SSHKeyFile = s.keyFile
		c.Auth.SSHKnownHosts = s2.knownHosts // wrong port and key
	})
	if _, err := src.Head(testCtx(t)); err == nil {
		t.Fatal("Head succeeded with a known_hosts that does not list the server")
	}
}

func TestWrongTokenIsRedactedAuthError(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	repo.Commit("first", map[string]string{"a": "a"})
	url, ca := gittest.StartHTTP(t, repo, true, "right-token")
	const wrong = "wr0ng-T0ken-value"
	for name, mutate := range map[string]func(*Config){
		"auth-field": func(c *Config) { c.Auth.Token = wrong; c.CABundle = ca },
		"in-url": func(c *Config) {
			c.URL = strings.Replace(url, "https://", "https://bob:"+wrong+"@", 1)
			c.CABundle = ca
		},
	} {
		t.Run(name, func(t *testing.T) {
			src, logs := newSource(t, url, mutate)
			_, herr := src.Head(testCtx(t))
			_, ferr := src.Fetch(testCtx(t))
			for _, err := range []error{herr, ferr} {
				if !errors.Is(err, ErrAuthFailed) {
					t.Fatalf("err = %v, want ErrAuthFailed", err)
				}
				if strings.Contains(err.Error(), wrong) {
					t.Fatalf("token leaked in error: %v", err)
				}
			}
			p := fastPoller(src)
			runPoller(t, p)
			st := waitStatus(t, p, "auth failure", func(s Status) bool { return s.ConsecutiveFailures > 0 })
			if !strings.Contains(st.LastError, "authentication failed") || strings.Contains(st.LastError, wrong) {
				t.Fatalf("Status.LastError = %q", st.LastError)
			}
			if strings.Contains(logs.String(), wrong) || strings.Contains(src.URL(), wrong) || strings.Contains(st.URL, wrong) {
				t.Fatalf("token leaked in logs or URL")
			}
			t.Logf("auth error reads: %v", ferr)
		})
	}
	t.Run("no-token", func(t *testing.T) {
		src, _ := newSource(t, url, func(c *Config) { c.CABundle = ca })
		if _, err := src.Head(testCtx(t)); !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("err = %v, want ErrAuthFailed", err)
		}
	})
}

func TestRedact(t *testing.T) {
	t.Parallel()
	r, err := newRemote(Config{URL: "https://u:p%40ss@example.com/r.git", Auth: Auth{Token: "tok"}}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if r.url != "https://example.com/r.git" {
		t.Fatalf("url = %q", r.url)
	}
	got := r.redact("tok https://a:b@h/x p@ss p%40ss")
	if strings.Contains(got, "tok") || strings.Contains(got, ":b@") || strings.Contains(got, "p%40ss") || strings.Contains(got, "p@ss") {
		t.Fatalf("redact = %q", got)
	}
	// A bare token as the URL's user name is a credential too.
	r, err = newRemote(Config{URL: "https://ghp_abc123@example.com/r.git"}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if r.display != "https://example.com/r.git" || r.redact("x ghp_abc123") != "x ***" {
		t.Fatalf("display %q, redact %q", r.display, r.redact("x ghp_abc123"))
	}
}

func TestSCPLikeURLUsesGitUser(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := dir + "/id"
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Skipf("SKIPPING: ssh-keygen unavailable: %v %s", err, out)
	}
	r, err := newRemote(Config{URL: "git@example.com:org/repo.git", Auth: Auth{SSHKeyFile: key}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	a, ok := r.auth.(*sshAuth)
	if !ok || a.User != "git" {
		t.Fatalf("auth = %#v, want ssh auth as user git", r.auth)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{
		{URL: "/x", Branch: "main", CacheDir: "/tmp/x"},
		{Name: "n", Branch: "main", CacheDir: "/tmp/x"},
		{Name: "n", URL: "/x", CacheDir: "/tmp/x"},
		{Name: "n", URL: "/x", Branch: "main"},
		{Name: "n", URL: "/x", Branch: "bad..name", CacheDir: "/tmp/x"},
		{Name: "n", URL: "relative/path", Branch: "main", CacheDir: t.TempDir()},
	} {
		if _, err := New(cfg, nil); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestMissingRevision(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	src, _ := newSource(t, repo.Bare, nil)
	sha := repo.Commit("c", map[string]string{"a": "a"})
	if _, err := src.Tree(sha); !errors.Is(err, ErrRevisionNotFound) {
		t.Fatalf("Tree before fetch: %v, want ErrRevisionNotFound", err)
	}
	if _, err := src.Tree("nothex"); err == nil {
		t.Fatal("Tree(nothex) succeeded")
	}
	if _, ok := src.Current(); ok {
		t.Fatal("Current before fetch reported a revision")
	}
}
