package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"merlin.dev/merlin/webhooks"
)

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
// fetch at once. Pull request and comment events are logged until the
// pull-request loop (previews, comments, commands) consumes them.
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

// Comment is not acted on yet.
func (s hookSink) Comment(_ context.Context, ev webhooks.Comment) {
	s.d.log.Info("issue_comment webhook received; commands are not run yet", "repo", ev.Repo, "pr", ev.Number, "delivery", ev.Delivery)
}
