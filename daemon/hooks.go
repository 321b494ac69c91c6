package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	scm "merlin.dev/merlin/scm/github"
	"merlin.dev/merlin/webhooks"
)

// newGitHub builds a repository's pull-request loop and, when its github
// block has a token or an app, the GitHub client the loop reports with and
// comment commands reply with. An empty token variable refuses the start,
// as an empty webhook secret does.
func (d *Daemon) newGitHub(i int, rc Repository) error {
	g := rc.GitHub
	var client *scm.Client
	if g.Reports() {
		if g.TokenEnv != "" && os.Getenv(g.TokenEnv) == "" {
			return fmt.Errorf("repositories[%d].github.tokenEnv: environment variable %s is empty; "+
				"set it to a GitHub token that may read the repository and comment on its pull requests", i, g.TokenEnv)
		}
		if d.ghMetrics == nil {
			d.ghMetrics = scm.NewMetrics()
			d.registry.MustRegister(d.ghMetrics)
		}
		o := scm.Options{Repo: g.Repo, APIURL: g.APIURL, TokenEnv: g.TokenEnv, Metrics: d.ghMetrics, Log: d.log.With("repo", rc.Name)}
		if g.App != nil {
			o.App = &scm.App{ID: g.App.ID, InstallationID: g.App.InstallationID, PrivateKeyFile: g.App.PrivateKeyFile}
		}
		var err error
		if client, err = scm.New(o); err != nil {
			return fmt.Errorf("repositories[%d].github: %w", i, err)
		}
	}
	p, err := newPulls(d, rc, client)
	if err != nil {
		return err
	}
	if d.pulls == nil {
		d.pulls, d.commands = map[string]*pulls{}, map[string]*commands{}
	}
	d.pulls[rc.Name] = p
	if client != nil {
		d.commands[rc.Name] = &commands{d: d, repo: rc.Name, branch: rc.Branch, gh: client, pulls: p, prs: map[int]chan struct{}{}}
	}
	return nil
}

// newHooks builds the webhook handler for the repositories with a github
// block, or returns nil when there are none. It refuses a github block
// whose secret variable is empty: unsigned deliveries would be accepted.
func (d *Daemon) newHooks() (*webhooks.Handler, error) {
	var repos []webhooks.Repo
	for i, rc := range d.cfg.Repositories {
		g := rc.GitHub
		if !g.Configured() {
			continue
		}
		secret := os.Getenv(g.WebhookSecretEnv)
		if secret == "" {
			return nil, fmt.Errorf("repositories[%d].github.webhookSecretEnv: environment variable %s is empty; "+
				"set it to the secret of the repository's GitHub webhook (webhook deliveries are verified with it)", i, g.WebhookSecretEnv)
		}
		repos = append(repos, webhooks.Repo{Name: rc.Name, FullName: g.Repo, Branch: rc.Branch, Secret: []byte(secret)})
		if err := d.newGitHub(i, rc); err != nil {
			return nil, err
		}
	}
	if len(repos) == 0 {
		return nil, nil
	}
	dir := filepath.Join(d.stateDir, "webhooks")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("webhooks: %w", err)
	}
	store, err := webhooks.OpenDeliveries(filepath.Join(dir, "deliveries"), 0)
	if err != nil {
		return nil, fmt.Errorf("webhooks: %w", err)
	}
	return webhooks.New(webhooks.Options{Repos: repos, Deliveries: store, Logger: d.log})
}

// hookSink acts on webhook events: a push makes the repository's poller
// fetch at once, a pull request event wakes its preview and report, and a
// comment may be a command.
type hookSink struct{ d *Daemon }

var _ webhooks.Sink = hookSink{}

// Push triggers the repository's fetch; the poller coalesces triggers.
func (s hookSink) Push(_ context.Context, ev webhooks.Push) {
	for _, r := range s.d.repos {
		if r.cfg.Name == ev.Repo {
			s.d.log.Info("push webhook: fetching now", "repo", ev.Repo, "sha", ev.After, "delivery", ev.Delivery)
			r.poller.Trigger()
		}
	}
}

// PullRequest hands the event to the repository's pull-request loop.
func (s hookSink) PullRequest(_ context.Context, ev webhooks.PullRequest) {
	if p := s.d.pulls[ev.Repo]; p != nil {
		p.event(ev)
	}
}

// Comment runs a `/merlin` command in the background (see commands);
// without a github token it is only logged.
func (s hookSink) Comment(ctx context.Context, ev webhooks.Comment) {
	c := s.d.commands[ev.Repo]
	if c == nil {
		s.d.log.Info("issue_comment webhook received; commands need github.tokenEnv", "repo", ev.Repo, "pr", ev.Number, "delivery", ev.Delivery)
		return
	}
	c.handle(ctx, ev)
}
