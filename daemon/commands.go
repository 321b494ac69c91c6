package daemon

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	scm "merlin.dev/merlin/scm/github"

	"merlin.dev/merlin/pullrequest"
	"merlin.dev/merlin/rollout"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/webhooks"
)

// commands runs the `/merlin ...` comment commands of one repository
// (SPEC §7): it decides with package pullrequest, acts through the API's
// code path (server.Server.Command, as the CLI does) and replies once.
type commands struct {
	d      *Daemon
	repo   string // Merlin's name of the repository
	branch string // the production branch, whose CODEOWNERS applies
	gh     *scm.Client
	pulls  *pulls // what is known of the pull requests: heads, changed models

	mu sync.Mutex
	// prs holds, per pull request, a channel closed when its last queued
	// command is done.
	prs map[int]chan struct{}
	wg  sync.WaitGroup // commands in flight, waited for at shutdown
}

// enqueue runs f in the background after the pull request's earlier
// commands: the webhook queue must not wait for a rollout command (up to
// 30s) or GitHub, and a pause then a resume on one pull request must run,
// and be answered, in that order.
func (c *commands) enqueue(pr int, f func()) {
	done := make(chan struct{})
	c.mu.Lock()
	prev := c.prs[pr]
	c.prs[pr] = done
	c.mu.Unlock()
	c.wg.Go(func() {
		defer func() {
			c.mu.Lock()
			if c.prs[pr] == done {
				delete(c.prs, pr)
			}
			c.mu.Unlock()
			close(done)
		}()
		if prev != nil {
			<-prev
		}
		f()
	})
}

// handle runs one comment, if it is a command, after the pull request's
// earlier ones.
func (c *commands) handle(ctx context.Context, ev webhooks.Comment) {
	e := commentEvent(ev)
	if _, ok := pullrequest.Triage(e); !ok {
		// Bots, Merlin's own comments, edits and non-commands: no API call.
		return
	}
	c.enqueue(ev.Number, func() {
		if err := c.run(ctx, ev.Number, e); err != nil {
			c.d.log.Warn("comment command failed", "repo", c.repo, "pr", ev.Number, "delivery", ev.Delivery, "err", err)
		}
	})
}

func commentEvent(ev webhooks.Comment) pullrequest.CommentEvent {
	p := ev.Event
	return pullrequest.CommentEvent{
		Action: p.GetAction(), Body: p.GetComment().GetBody(), Login: p.GetComment().GetUser().GetLogin(),
		SenderType: p.GetSender().GetType(), OnPR: p.GetIssue().IsPullRequest(),
	}
}

// run decides a command and acts on it. The commenter's permission is
// asked first, so that a reader's command costs one API call and no write;
// CODEOWNERS is read (from the production branch, now) only for a writer
// whose command names models.
func (c *commands) run(ctx context.Context, pr int, e pullrequest.CommentEvent) error {
	perm, role, err := c.gh.Permission(ctx, e.Login)
	if err != nil {
		return err
	}
	access := knownAccess{perm, role}
	// Decide's own silence, before CODEOWNERS costs a call: no files, so
	// only the permission is judged.
	if v, err := pullrequest.Authorize(ctx, access, nil, nil, e.Login, nil); err != nil || v.Silent {
		c.d.log.Info("comment command ignored: the commenter cannot write", "repo", c.repo, "pr", pr, "login", e.Login, "reason", v.Reason)
		return err
	}
	p, _, ok := c.pulls.known(pr)
	if !ok {
		// Its opening was missed (before the webhook was set up, or while
		// the daemon was down): GitHub says what it is.
		got, err := c.gh.PullRequest(ctx, pr)
		if err != nil {
			return err
		}
		p = c.pulls.learn(got)
	}
	cmd, _ := pullrequest.Triage(e)
	models := map[string]string{}
	if cmd.Verb != pullrequest.Help && cmd.Verb != pullrequest.Status {
		if models, err = c.pulls.changedModels(ctx, pr, c.production()); err != nil {
			return fmt.Errorf("models the pull request changes: %w", err)
		}
	}
	var owners *pullrequest.Codeowners
	if targets, _ := pullrequest.Targets(cmd, sortedNames(models)); len(targets) > 0 {
		data, _, found, err := c.gh.CodeOwners(ctx, c.branch)
		if err != nil {
			return err
		}
		if found {
			owners = pullrequest.ParseCodeowners(string(data))
		}
	}
	dec, err := pullrequest.Decide(ctx, e, p, models, access, c.gh, owners)
	if err != nil {
		return err
	}
	var reply string
	switch dec.Action {
	case pullrequest.Ignore:
		return nil
	case pullrequest.Answer:
		reply = dec.Reply
	case pullrequest.Execute:
		reply = c.execute(ctx, pr, e.Login, dec)
	}
	_, err = c.gh.CreateComment(ctx, pr, reply)
	return err
}

// execute runs a decided command on its models and returns the reply.
func (c *commands) execute(ctx context.Context, pr int, login string, dec pullrequest.Decision) string {
	switch dec.Command.Verb {
	case pullrequest.Promote, pullrequest.Rollback, pullrequest.Pause, pullrequest.Resume:
	case pullrequest.Preview:
		return c.preview(pr, login, dec)
	case pullrequest.Status:
		return c.status(pr, login, dec)
	default:
		return pullrequest.Refusal(pr, login, dec.Command, fmt.Sprintf("`/merlin %s` is not a command this Merlin runs.", dec.Command.Verb))
	}
	outcomes := make([]pullrequest.Outcome, 0, len(dec.Models))
	for _, m := range dec.Models {
		res, err := c.d.api.Command(ctx, m, rollout.Command(dec.Command.Verb))
		o := pullrequest.Outcome{Model: m, Err: err}
		if err == nil {
			o.Message = outcomeMessage(dec.Command.Verb, res.Phase, res.Events)
		}
		c.d.log.Info("comment command run", "repo", c.repo, "pr", pr, "login", login, "model", m, "command", dec.Command.Verb, "err", err)
		outcomes = append(outcomes, o)
	}
	return pullrequest.Reply(pr, login, dec.Command, outcomes)
}

func outcomeMessage(v pullrequest.Verb, phase rollout.Phase, events []rollout.Event) string {
	var reasons []string
	for _, ev := range events {
		if ev.Reason != "" {
			reasons = append(reasons, ev.Reason)
		}
	}
	msg := fmt.Sprintf("%s done; the rollout is %s", v, phase)
	if len(reasons) > 0 {
		msg += " (" + strings.Join(reasons, "; ") + ")"
	}
	return msg
}

// preview runs a writer's `/merlin preview`: the head of this moment may
// run (a fork's later pushes need another approval), and the loop deploys
// it.
func (c *commands) preview(pr int, login string, dec pullrequest.Decision) string {
	sha := dec.PR.ApprovedSHA
	c.pulls.approve(pr, sha)
	c.d.log.Info("comment command run", "repo", c.repo, "pr", pr, "login", login, "command", dec.Command.Verb, "sha", shortSHA(sha))
	outcomes := make([]pullrequest.Outcome, 0, len(dec.Models))
	for _, m := range dec.Models {
		outcomes = append(outcomes, pullrequest.Outcome{Model: m,
			Message: fmt.Sprintf("%s is being deployed as a shadow of production; the pull request's Merlin comment follows it", shortSHA(sha))})
	}
	return pullrequest.Reply(pr, login, dec.Command, outcomes)
}

// status answers `/merlin status`: where each model the pull request
// changes stands, and the sticky comment is brought up to date.
func (c *commands) status(pr int, login string, dec pullrequest.Decision) string {
	c.pulls.kick(pr)
	production := c.production()
	p, results, _ := c.pulls.known(pr)
	var outcomes []pullrequest.Outcome
	for _, res := range results {
		if !res.Changed {
			continue
		}
		st := pullrequest.StatusOf(p, reportOf(res, production))
		outcomes = append(outcomes, pullrequest.Outcome{Model: cmp.Or(res.Model, res.File), Message: fmt.Sprintf("%s: %s", st.State, st.Description)})
	}
	if len(outcomes) == 0 {
		outcomes = append(outcomes, pullrequest.Outcome{Model: "pull request", Message: string(pullrequest.StageOf(p, pullrequest.Report{}))})
	}
	return pullrequest.Reply(pr, login, dec.Command, outcomes)
}

// production is the repository's models as production serves them.
func (c *commands) production() []serving.ModelStatus {
	if r := c.d.repoNamed(c.repo); r != nil {
		return r.Status().Models
	}
	return nil
}

func sortedNames(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// knownAccess answers Decide with the permission already asked.
type knownAccess struct{ permission, role string }

func (a knownAccess) Permission(context.Context, string) (string, string, error) {
	return a.permission, a.role, nil
}
