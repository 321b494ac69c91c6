package pullrequest

import (
	"slices"
	"strings"
)

// Verb is what a comment command asks for.
type Verb string

// Verbs of `/merlin VERB [model]`.
const (
	Help     Verb = "help"
	Status   Verb = "status"
	Preview  Verb = "preview"
	Promote  Verb = "promote"
	Rollback Verb = "rollback"
	Pause    Verb = "pause"
	Resume   Verb = "resume"
)

// takesModel lists the verbs that act on one model (the CLI's
// `merlin promote|rollback|pause|resume MODEL`).
var takesModel = []Verb{Promote, Rollback, Pause, Resume}

// Command is a parsed `/merlin` line.
type Command struct {
	Verb Verb
	// Model is the model argument, as typed ("" when none).
	Model string
	// Unknown is the verb as typed when it is not one Merlin knows (Verb
	// is then Help); Extra holds arguments beyond those the verb takes.
	Unknown string
	Extra   []string
}

// ParseCommand reads a comment's first line. ok is false when it is not a
// command; an unknown verb is a request for help.
func ParseCommand(body string) (c Command, ok bool) {
	first, _, _ := strings.Cut(body, "\n")
	fields := strings.Fields(first)
	if len(fields) == 0 || !strings.EqualFold(fields[0], "/merlin") {
		return Command{}, false
	}
	if len(fields) == 1 {
		return Command{Verb: Help}, true
	}
	v := Verb(strings.ToLower(fields[1]))
	args := fields[2:]
	switch {
	case slices.Contains(takesModel, v):
		c = Command{Verb: v}
		if len(args) > 0 {
			c.Model, args = args[0], args[1:]
		}
	case v == Help || v == Status || v == Preview:
		c = Command{Verb: v}
	default:
		return Command{Verb: Help, Unknown: fields[1]}, true
	}
	if len(args) > 0 {
		c.Extra = args
	}
	return c, true
}

// HelpText is the reply to `/merlin help` and to unknown commands.
const HelpText = "Merlin understands these commands, as the first line of a new comment:\n\n" +
	"| command | does |\n|---|---|\n" +
	"| `/merlin help` | shows this help |\n" +
	"| `/merlin status` | refreshes the status comment |\n" +
	"| `/merlin preview` | deploys this pull request's current head as a shadow of production (needed for forks) |\n" +
	"| `/merlin promote [model]` | finishes the model's rollout now (as `merlin promote`) |\n" +
	"| `/merlin rollback [model]` | rolls the model back to its previous version |\n" +
	"| `/merlin pause [model]` | holds the model's rollout where it is |\n" +
	"| `/merlin resume [model]` | resumes a paused rollout |\n\n" +
	"The model may be left out when the pull request changes only one. Commands need write access to the repository and, where CODEOWNERS covers the model's directory, its code owners.\n"
