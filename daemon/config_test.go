package daemon

import (
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/reconciler"
)

func TestConfigDefaults(t *testing.T) {
	c, err := ParseConfig("c.yaml", []byte("repositories:\n  - {name: models, url: /srv/models}\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Repositories[0]
	if c.Target != "local" || c.Local.Listen != "127.0.0.1:8080" || c.Local.StateDir != ".merlin" ||
		c.Server.Listen != "127.0.0.1:9292" || c.Metrics.Provider != "local" ||
		r.Branch != "main" || r.Interval.D() != time.Minute {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestConfigErrorsArePositioned(t *testing.T) {
	tests := []struct {
		name, config string
		want         []string
	}{
		{"no repositories", "target: local\n", []string{"c.yaml:1:1: repositories: at least one repository is required"}},
		{"bad repo name", "repositories:\n  - name: Models\n    url: /x\n",
			[]string{`c.yaml:2:11: repositories[0].name: "Models" must be lower-case`}},
		{"missing url", "repositories:\n  - name: a\n  - name: b\n    url: /x\n",
			[]string{"c.yaml:2:5: repositories[0].url: is required"}},
		{"duplicate name", "repositories:\n  - {name: a, url: /x}\n  - {name: a, url: /y}\n",
			[]string{`c.yaml:3:12: repositories[1].name: "a" is used twice`}},
		{"short interval", "repositories:\n  - {name: a, url: /x, interval: 100ms}\n",
			[]string{"c.yaml:2:34: repositories[0].interval: must be at least 1s"}},
		{"bad target", "repositories: [{name: a, url: /x}]\ntarget: cloud\n",
			[]string{`c.yaml:2:9: target: "cloud" must be local or kubernetes`}},
		{"prometheus without url", "repositories: [{name: a, url: /x}]\nmetrics: {provider: prometheus}\n",
			[]string{"c.yaml:2:1: metrics.url: is required for the prometheus provider"}},
		{"unknown field", "repositories: [{name: a, url: /x, brnach: dev}]\n",
			[]string{`c.yaml:1:35: repositories[0].brnach: unknown field`}},
		{"absolute path", "repositories:\n  - name: a\n    url: /x\n    paths: [models, /srv/models]\n",
			[]string{`c.yaml:4:21: repositories[0].paths[1]: "/srv/models" must be relative to the repository root`}},
		{"path leaves the repository", "repositories:\n  - name: a\n    url: /x\n    paths:\n      - ./models/../../other\n",
			[]string{`c.yaml:5:9: repositories[0].paths[0]: "./models/../../other" leaves the repository`}},
		{"empty path", "repositories: [{name: a, url: /x, paths: [\"\"]}]\n",
			[]string{`c.yaml:1:43: repositories[0].paths[0]: "" is empty`}},
		{"token instead of its variable", "repositories: [{name: a, url: /x}]\nserver: {tokenEnv: \"s3cret token\"}\n",
			[]string{`c.yaml:2:20: server.tokenEnv: "s3cret token" must be the name of an environment variable`}},
		{"allowed host with a port", "repositories: [{name: a, url: /x}]\nserver: {allowedHosts: [ok.example, \"h.example:80\"]}\n",
			[]string{`server.allowedHosts[1]: "h.example:80" must be a host name or address, without scheme or port`}},
		{"github apiURL not a URL", "repositories:\n  - name: a\n    url: /x\n    github: {repo: acme/m, webhookSecretEnv: S, apiURL: \"api.github.com\"}\n",
			[]string{`c.yaml:4:57: repositories[0].github.apiURL: "api.github.com" must be an http(s) URL`}},
		{"github app and token", "repositories:\n  - name: a\n    url: /x\n    github: {repo: acme/m, webhookSecretEnv: S, tokenEnv: T, app: {id: 1, installationID: 2, privateKeyFile: /k.pem}}\n",
			[]string{`repositories[0].github.app: set tokenEnv or app, not both`}},
		{"github app without key", "repositories:\n  - name: a\n    url: /x\n    github: {repo: acme/m, webhookSecretEnv: S, app: {id: 1, installationID: 2}}\n",
			[]string{`repositories[0].github.app.privateKeyFile: is required`}},
		{"github comment interval too short", "repositories:\n  - name: a\n    url: /x\n    github: {repo: acme/m, webhookSecretEnv: S, commentInterval: 100ms}\n",
			[]string{`repositories[0].github.commentInterval: must be at least 1s`}},
		{"github status URL", "repositories:\n  - name: a\n    url: /x\n    github: {repo: acme/m, webhookSecretEnv: S, statusURL: \"merlin.local\"}\n",
			[]string{`repositories[0].github.statusURL: "merlin.local" must be an http(s) URL`}},
		{"listen without port", "repositories: [{name: a, url: /x}]\nserver: {listen: localhost}\n",
			[]string{`c.yaml:2:18: server.listen: "localhost" must be host:port`}},
		{"request limit not a size", "repositories: [{name: a, url: /x}]\nlocal: {maxRequestBytes: lots}\n",
			[]string{`c.yaml:2:26: local.maxRequestBytes: invalid quantity "lots"`}},
		{"request limit zero", "repositories: [{name: a, url: /x}]\nlocal: {maxRequestBytes: 0}\n",
			[]string{`c.yaml:2:26: local.maxRequestBytes: "0" must be a positive number of bytes`}},
		{"negative concurrency", "repositories: [{name: a, url: /x}]\nlocal: {maxConcurrency: -3, maxQueue: -2}\n",
			[]string{`c.yaml:2:25: local.maxConcurrency: must be positive`, `c.yaml:2:39: local.maxQueue: must be -1`}},
		{"several at once", "repositories:\n  - {name: A, url: /x}\ntarget: cloud\n",
			[]string{`c.yaml:2:12: repositories[0].name`, `c.yaml:3:9: target`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("c.yaml", []byte(tt.config))
			if err == nil {
				t.Fatalf("no error; want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, w)
				}
			}
		})
	}
}

// TestConfigPathsAsWritten: the forms SPEC §3 and people use are accepted
// (the reconciler reads them as the same directory).
func TestConfigPathsAsWritten(t *testing.T) {
	c, err := ParseConfig("c.yaml", []byte("repositories:\n  - {name: a, url: /x, paths: [\"models/\", ./models, models, ./a/b/, .]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := reconciler.CleanPaths(c.Repositories[0].Paths); strings.Join(got, " ") != "models a/b ." {
		t.Fatalf("paths read as %q", got)
	}
}

// TestConfigLocalLimits reads the router's limits in the quantities people
// write, and their defaults.
func TestConfigLocalLimits(t *testing.T) {
	c, err := ParseConfig("c.yaml", []byte("repositories: [{name: a, url: /x}]\n"+
		"local: {maxRequestBytes: 100M, maxBufferedBytes: 1Gi, maxConcurrency: 8, maxQueue: -1, queueTimeout: 250ms}\n"))
	if err != nil {
		t.Fatal(err)
	}
	l := c.Local
	if got := l.MaxRequestBytes.Value(); got != 100_000_000 {
		t.Errorf("maxRequestBytes 100M read as %d", got)
	}
	if got := l.MaxBufferedBytes.Value(); got != 1<<30 || l.MaxConcurrency != 8 || l.MaxQueue != -1 || l.QueueTimeout.D() != 250*time.Millisecond {
		t.Errorf("read as %d bytes, %d, %d, %s", got, l.MaxConcurrency, l.MaxQueue, l.QueueTimeout.D())
	}
	c, err = ParseConfig("c.yaml", []byte("repositories: [{name: a, url: /x}]\nlocal: {maxRequestBytes: 8Mi}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Local.MaxRequestBytes.Value(); got != 8<<20 {
		t.Errorf("maxRequestBytes 8Mi read as %d", got)
	}
}
