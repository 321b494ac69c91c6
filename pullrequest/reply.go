package pullrequest

import (
	"fmt"
	"strings"
)

// Line renders a command as Merlin understood it, escaped for Markdown.
func (c Command) Line() string {
	s := "/merlin " + string(c.Verb)
	if c.Unknown != "" {
		s = "/merlin " + c.Unknown
	}
	if c.Model != "" {
		s += " " + c.Model
	}
	return Text(s, 200)
}

// Outcome is what a command did to one model, or why it did nothing.
type Outcome struct {
	Model string
	// Message is the result in words (from the same code path as the
	// CLI's `merlin promote` etc.); Err, when set, is why it failed.
	Message string
	Err     error
}

// Reply is the body of Merlin's reply to a command: a reply marker, then
// @login and what happened to each model.
func Reply(pr int, login string, c Command, outcomes []Outcome) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n@%s: %s\n", replyMarker(pr), login, c.Line())
	for _, o := range outcomes {
		switch {
		case o.Err != nil:
			fmt.Fprintf(&b, "- %s: failed: %s\n", Text(o.Model, maxNameRunes), Text(o.Err.Error(), maxErrorRunes))
		default:
			fmt.Fprintf(&b, "- %s: %s\n", Text(o.Model, maxNameRunes), Text(o.Message, maxErrorRunes))
		}
	}
	return b.String()
}

// Refusal is the body of Merlin's reply to a command it will not run.
func Refusal(pr int, login string, c Command, reason string) string {
	return fmt.Sprintf("%s\n@%s: %s was not run: %s\n", replyMarker(pr), login, c.Line(), reason)
}

// HelpReply answers `/merlin help` and unknown commands.
func HelpReply(pr int, login string, c Command) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n@%s: ", replyMarker(pr), login)
	if c.Unknown != "" {
		fmt.Fprintf(&b, "%s is not a Merlin command. ", c.Line())
	}
	b.WriteString(HelpText)
	return b.String()
}

// Approve records a writer's `/merlin preview` on a pull request: the
// head of this moment may run; a later push needs another approval.
func Approve(p PR) PR {
	p.ApprovedSHA = p.HeadSHA
	return p
}
