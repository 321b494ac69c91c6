package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	scm "merlin.dev/merlin/scm/github"
	"merlin.dev/merlin/webhooks"
)

// newCommands builds the GitHub client that runs a repository's comment
// commands, when its github block has a token. An empty token variable
// refuses the start, as an empty webhook secret does.
func (d *Daemon) newCommands(i int, rc Repository) error {
	g := rc.GitHub
	if g.TokenEnv == "" {
		return nil
	}
	if os.Getenv(g.TokenEnv) == "" {
		return fmt.Errorf("repositories[%d].github.tokenEnv: environment variable %s is empty; "+
			"set it to a GitHub token that may read the repository and comment on its pull requests", i, g.TokenEnv)
	}
	if d.ghMetrics == nil {
		d.ghMetrics = scm.NewMetrics()
		d.registry.MustRegister(d.ghMetrics)
	}
	client, err := scm.New(scm.Options{Repo: g.Repo, APIURL: g.APIURL, TokenEnv: g.TokenEnv, Metrics: d.ghMetrics, Log: d.log.With("repo", rc.Name)})
	if err != nil {
		return fmt.Errorf("repositories[%d].github: %w", i, err)
	}
	if d.commands == nil {
		d.commands = map[string]*commands{}
	}
	d.commands[rc.Name] = &commands{d: d, repo: rc.Name, branch: rc.Branch, gh: client, prs: map[int]chan struct{}{}}
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
		if err := d.newCommands(i, rc); err != nil {
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
// fetch at once and a comment may be a command. Pull request events are
// logged until previews are built.
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

// PullRequest is not acted on yet.
func (s hookSink) PullRequest(_ context.Context, ev webhooks.PullRequest) {
	s.d.log.Info("pull_request webhook received; previews are not built yet", "repo", ev.Repo, "pr", ev.Number, "action", ev.Action, "delivery", ev.Delivery)
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
