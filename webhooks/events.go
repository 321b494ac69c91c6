package webhooks

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-github/v60/github"
)

// Repo is a watched repository that GitHub delivers events for.
type Repo struct {
	// Name is Merlin's name of the repository (repositories[].name).
	Name string
	// FullName is GitHub's owner/name (github.repo).
	FullName string
	// Branch is the production branch: pushes to other branches are ignored.
	Branch string
	// Secret is the webhook secret; deliveries for this repository must
	// be signed with it.
	Secret []byte
}

// Meta is what every event carries.
type Meta struct {
	// Repo is Merlin's name of the repository.
	Repo string
	// Delivery is GitHub's X-GitHub-Delivery id.
	Delivery string
	// Received is when the delivery arrived.
	Received time.Time
}

// Push is a push to a repository's production branch.
type Push struct {
	Meta
	Ref, Before, After string
}

// PullRequest is a pull_request event Merlin acts on: opened, reopened,
// synchronize, closed, or edited with a change of base branch. The PR's
// base may be any branch (an edit may have moved it away from production).
type PullRequest struct {
	Meta
	Action string
	Number int
	Event  *github.PullRequestEvent
}

// Comment is a newly created comment on a pull request (never an edit or a
// deletion, never a comment on a plain issue).
type Comment struct {
	Meta
	Number int
	Event  *github.IssueCommentEvent
}

// Sink receives the events, one at a time, in the order they arrived. Its
// methods should hand long work off: the next event waits for them.
type Sink interface {
	Push(ctx context.Context, ev Push)
	PullRequest(ctx context.Context, ev PullRequest)
	Comment(ctx context.Context, ev Comment)
}

// Event is a Push, PullRequest or Comment.
type Event interface {
	deliver(ctx context.Context, s Sink)
}

func (e Push) deliver(ctx context.Context, s Sink)        { s.Push(ctx, e) }
func (e PullRequest) deliver(ctx context.Context, s Sink) { s.PullRequest(ctx, e) }
func (e Comment) deliver(ctx context.Context, s Sink)     { s.Comment(ctx, e) }

// Decision is what a verified delivery leads to.
type Decision struct {
	// Events to queue, one per watched repository the delivery concerns;
	// none when it is ignored.
	Events []Event
	// Ping is set for GitHub's ping (answered, nothing else).
	Ping bool
	// Ignored says why nothing is queued ("" when Events or Ping).
	Ignored string
}

// Decide parses a delivery whose signature verified with secret and says
// what it leads to. kind is X-GitHub-Event. Only repositories configured
// with that secret are considered, so that one repository's secret cannot
// forge events for another. An error means an unparsable body.
func Decide(kind string, body []byte, secret []byte, repos []Repo, meta Meta) (Decision, error) {
	switch kind {
	case "ping", "push", "pull_request", "issue_comment":
	default:
		return Decision{Ignored: fmt.Sprintf("event %q is not used", kind)}, nil
	}
	payload, err := github.ParseWebHook(kind, body)
	if err != nil {
		return Decision{}, fmt.Errorf("parse %s event: %w", kind, err)
	}
	if kind == "ping" {
		return Decision{Ping: true}, nil
	}
	var fullName string
	switch p := payload.(type) {
	case *github.PushEvent:
		fullName = p.GetRepo().GetFullName()
	case *github.PullRequestEvent:
		fullName = p.GetRepo().GetFullName()
	case *github.IssueCommentEvent:
		fullName = p.GetRepo().GetFullName()
	}
	var d Decision
	matched := false
	for _, r := range repos {
		if !strings.EqualFold(r.FullName, fullName) || string(r.Secret) != string(secret) {
			continue
		}
		matched = true
		m := meta
		m.Repo = r.Name
		if ev, why := decideFor(r, m, payload); ev != nil {
			d.Events = append(d.Events, ev)
		} else {
			d.Ignored = why
		}
	}
	if !matched {
		return Decision{Ignored: fmt.Sprintf("repository %q is not watched with this secret", fullName)}, nil
	}
	if len(d.Events) > 0 {
		d.Ignored = ""
	}
	return d, nil
}

// decideFor is the event for one watched repository, or why there is none.
func decideFor(r Repo, m Meta, payload any) (Event, string) {
	switch p := payload.(type) {
	case *github.PushEvent:
		if p.GetRef() != "refs/heads/"+r.Branch {
			return nil, fmt.Sprintf("push to %s, not to the production branch %s", p.GetRef(), r.Branch)
		}
		return Push{Meta: m, Ref: p.GetRef(), Before: p.GetBefore(), After: p.GetAfter()}, ""
	case *github.PullRequestEvent:
		switch a := p.GetAction(); a {
		case "opened", "reopened", "synchronize", "closed":
		case "edited":
			if p.GetChanges().GetBase() == nil {
				return nil, "pull request edited without a change of base branch"
			}
		default:
			return nil, fmt.Sprintf("pull_request action %q is not used", a)
		}
		return PullRequest{Meta: m, Action: p.GetAction(), Number: p.GetNumber(), Event: p}, ""
	case *github.IssueCommentEvent:
		if a := p.GetAction(); a != "created" {
			return nil, fmt.Sprintf("issue_comment action %q is ignored: only new comments are read", a)
		}
		if !p.GetIssue().IsPullRequest() {
			return nil, "comment on an issue, not on a pull request"
		}
		return Comment{Meta: m, Number: p.GetIssue().GetNumber(), Event: p}, ""
	}
	return nil, "not used"
}
