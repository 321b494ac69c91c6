package pullrequest

import "context"

// Action is what the loop does with a comment.
type Action int

// Actions.
const (
	Ignore  Action = iota // not a command, or one Merlin never executes
	Answer                // reply with Decision.Reply; nothing runs (help, a refusal)
	Execute               // run Decision.Command on Decision.Models, then Reply
)

// Decision is the plan for one comment.
type Decision struct {
	Action  Action
	Command Command
	Models  []string
	// Reply is the body to post for Answer (empty when the refusal is
	// silent: the commenter cannot write to the repository).
	Reply string
	// PR is the pull request after the command: a writer's `/merlin
	// preview` pins the head SHA of this moment.
	PR PR
}

// Decide plans a comment from start to finish: triage, the models it
// names among those the pull request changes (models maps names to their
// merlin.yaml on the production branch), and authorization, which is
// checked now, when the command acts. Only Access and Teams are asked
// anything; the caller posts Reply and runs the command.
func Decide(ctx context.Context, e CommentEvent, p PR, models map[string]string, a Access, teams Teams, owners *Codeowners) (Decision, error) {
	c, ok := Triage(e)
	if !ok {
		return Decision{PR: p}, nil
	}
	d := Decision{Command: c, PR: p}
	names := sortedKeys(models)
	targets, refusal := Targets(c, names)
	files := make([]string, 0, len(targets))
	for _, m := range targets {
		files = append(files, models[m])
	}
	v, err := Authorize(ctx, a, teams, owners, e.Login, files)
	switch {
	case err != nil:
		return Decision{PR: p}, err
	case v.Silent:
		return Decision{Action: Ignore, Command: c, PR: p}, nil
	case c.Verb == Help:
		d.Action, d.Reply = Answer, HelpReply(p.Number, e.Login, c)
	case refusal != "":
		d.Action, d.Reply = Answer, Refusal(p.Number, e.Login, c, refusal)
	case !v.Allowed:
		d.Action, d.Reply = Answer, Refusal(p.Number, e.Login, c, v.Reason)
	default:
		d.Action, d.Models = Execute, targets
		if c.Verb == Preview {
			d.PR = Approve(p)
		}
	}
	return d, nil
}
