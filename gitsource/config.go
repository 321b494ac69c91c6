package gitsource

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// Defaults for the store growth policy (see the package documentation).
const (
	DefaultKeepRevisions = 16
	DefaultCompactEvery  = 100
	DefaultMaxCacheBytes = 256 << 20
)

// sshDialTimeout bounds the TCP+SSH handshake, which go-git does not tie to
// the operation's context.
const sshDialTimeout = 30 * time.Second

// Config describes one watched repository.
type Config struct {
	// Name is a short name used in logs (key "repo").
	Name string
	// URL of the remote: file:///abs, /abs/plain/path, git://host/repo,
	// http(s)://host/repo.git, ssh://user@host:port/path or git@host:path.
	URL string
	// Branch to track (required), without the refs/heads/ prefix.
	Branch string
	// Auth is optional.
	Auth Auth
	// CacheDir is where the on-disk object store lives, e.g.
	// <stateDir>/git/<name>. The Source owns this directory.
	CacheDir string

	// CABundle holds extra PEM certificates trusted for https remotes, on
	// top of the system pool.
	CABundle []byte
	// InsecureSkipTLS disables certificate verification for https remotes.
	// For tests and lab setups only.
	InsecureSkipTLS bool

	// KeepRevisions is how many recently fetched heads stay in the store
	// so Changed can diff against them (default DefaultKeepRevisions).
	KeepRevisions int
	// CompactEvery compacts the store after this many fetches (default
	// DefaultCompactEvery).
	CompactEvery int
	// MaxCacheBytes compacts the store once it is larger than this and
	// twice its size after the last compaction (default
	// DefaultMaxCacheBytes).
	MaxCacheBytes int64
}

// Auth holds optional credentials for a remote.
type Auth struct {
	// Username for HTTPS basic/token auth; "git" when only Token is set.
	Username string
	// Token is the HTTPS password or access token. It is never logged.
	Token string
	// SSHKeyFile is the path of an unencrypted private key for ssh:// and
	// git@host:path URLs.
	SSHKeyFile string
	// SSHKnownHosts is an optional known_hosts file. When empty, any host
	// key is accepted and a warning is logged once.
	SSHKnownHosts string
}

func (c *Config) withDefaults() {
	if c.KeepRevisions <= 0 {
		c.KeepRevisions = DefaultKeepRevisions
	}
	if c.CompactEvery <= 0 {
		c.CompactEvery = DefaultCompactEvery
	}
	if c.MaxCacheBytes <= 0 {
		c.MaxCacheBytes = DefaultMaxCacheBytes
	}
}

func (c *Config) validate() error {
	switch {
	case c.Name == "":
		return errors.New("config: name is required")
	case c.URL == "":
		return errors.New("config: url is required")
	case c.Branch == "":
		return errors.New("config: branch is required")
	case c.CacheDir == "":
		return errors.New("config: cache dir is required")
	}
	if err := plumbing.NewBranchReferenceName(c.Branch).Validate(); err != nil {
		return fmt.Errorf("config: branch %q: %w", c.Branch, err)
	}
	return nil
}

// remote is the resolved, credential-free view of Config.URL plus the auth
// method and everything needed to redact secrets.
type remote struct {
	url      string // passed to go-git; has no credentials
	display  string // for logs and Status
	auth     transport.AuthMethod
	caBundle []byte
	insecure bool
	secrets  []string
	// localPath is the repository's directory when it is on this machine.
	localPath string
}

// newRemote resolves cfg's URL and credentials. log receives the one-time
// warning about unchecked ssh host keys.
func newRemote(cfg Config, log *slog.Logger) (*remote, error) {
	r := &remote{caBundle: cfg.CABundle, insecure: cfg.InsecureSkipTLS}
	r.addSecret(cfg.Auth.Token)

	ep, err := transport.NewEndpoint(cfg.URL)
	if err != nil {
		// The parser's error repeats the URL, secrets included: drop it.
		return nil, fmt.Errorf("parse url %s: invalid url", r.redact(cfg.URL))
	}
	r.addSecret(ep.Password)

	switch ep.Protocol {
	case "http", "https":
		err = r.setHTTP(cfg)
	case "ssh":
		err = r.setSSH(cfg, ep, log)
	case "file":
		r.url, r.localPath = cfg.URL, ep.Path
		if !strings.HasPrefix(cfg.URL, "file://") && !filepath.IsAbs(cfg.URL) {
			err = fmt.Errorf("local path %s is not absolute", cfg.URL)
		}
	default:
		r.url = cfg.URL
	}
	if err != nil {
		return nil, r.wrap(err)
	}
	r.display = r.redact(r.url)
	return r, nil
}

func (r *remote) setHTTP(cfg Config) error {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return errors.New("invalid url")
	}
	// Any userinfo in the URL is credential material ("https://TOKEN@host"
	// is a common form): move it into the auth method, out of the URL.
	user, pass := "", ""
	if u.User != nil {
		user = u.User.Username()
		pass, _ = u.User.Password()
		r.addSecret(user)
		u.User = nil
	}
	r.url = u.String()
	token := cmp.Or(cfg.Auth.Token, pass)
	name := cmp.Or(cfg.Auth.Username, user)
	switch {
	case token != "":
		r.auth = &githttp.BasicAuth{Username: cmp.Or(name, "git"), Password: token}
	case name != "":
		r.auth = &githttp.BasicAuth{Username: name}
	}
	return nil
}

func (r *remote) setSSH(cfg Config, ep *transport.Endpoint, log *slog.Logger) error {
	r.url = cfg.URL
	if cfg.Auth.SSHKeyFile == "" {
		// go-git falls back to the ssh agent and ~/.ssh/known_hosts.
		return nil
	}
	user := ep.User
	if user == "" {
		user = "git"
	}
	keys, err := gitssh.NewPublicKeysFromFile(user, cfg.Auth.SSHKeyFile, "")
	if err != nil {
		return fmt.Errorf("load ssh key %s: %w", cfg.Auth.SSHKeyFile, err)
	}
	if cfg.Auth.SSHKnownHosts != "" {
		db, err := gitssh.NewKnownHostsDb(cfg.Auth.SSHKnownHosts)
		if err != nil {
			return fmt.Errorf("load known hosts %s: %w", cfg.Auth.SSHKnownHosts, err)
		}
		port := ep.Port
		if port == 0 {
			port = 22
		}
		keys.HostKeyCallback = db.HostKeyCallback()
		keys.HostKeyAlgorithms = db.HostKeyAlgorithms(net.JoinHostPort(ep.Host, strconv.Itoa(port)))
	} else {
		log.Warn("ssh host key checking disabled: set Auth.SSHKnownHosts to verify the server",
			"repo", cfg.Name, "host", ep.Host)
		keys.HostKeyCallback = gossh.InsecureIgnoreHostKey() //nolint:gosec // documented opt-out
	}
	r.auth = &sshAuth{PublicKeys: keys}
	return nil
}

// sshAuth bounds the ssh handshake: go-git dials ssh with a background
// context, so without a timeout a black-holed host would block for minutes.
type sshAuth struct {
	*gitssh.PublicKeys
}

// ClientConfig implements gitssh.AuthMethod.
func (a *sshAuth) ClientConfig() (*gossh.ClientConfig, error) {
	c, err := a.PublicKeys.ClientConfig()
	if err != nil {
		return nil, err
	}
	c.Timeout = sshDialTimeout
	return c, nil
}

func (r *remote) addSecret(s string) {
	if s == "" {
		return
	}
	r.secrets = append(r.secrets, s)
	if e := url.QueryEscape(s); e != s {
		r.secrets = append(r.secrets, e)
	}
	if e := url.PathEscape(s); e != s {
		r.secrets = append(r.secrets, e)
	}
}

// userinfoRE matches the password part of scheme://user:password@host.
var userinfoRE = regexp.MustCompile(`(\w+://[^/@\s:]*):[^/@\s]*@`)

// redact removes known secrets and any URL password from s.
func (r *remote) redact(s string) string {
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, "***")
	}
	return userinfoRE.ReplaceAllString(s, "$1:***@")
}

// wrap returns err with its message redacted; errors.Is/As still see the
// original chain.
func (r *remote) wrap(err error) error {
	if err == nil {
		return nil
	}
	return &redactedError{msg: r.redact(err.Error()), err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
