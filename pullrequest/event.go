package pullrequest

import (
	"fmt"
	"slices"
	"strings"
)

// CommentEvent is an issue_comment delivery, reduced to what decides
// whether it is a command.
type CommentEvent struct {
	// Action is "created", "edited" or "deleted".
	Action string
	Body   string
	Login  string
	// SenderType is the sender's type: "User", "Bot" or "Organization".
	SenderType string
	// OnPR: the comment is on a pull request (issue.pull_request is set).
	OnPR bool
}

// Triage decides whether a comment is a command to act on: only newly
// created comments on pull requests, never a bot's nor one carrying
// Merlin's marker (its own comments and their quotes), and only when the
// first line is `/merlin ...`.
func Triage(e CommentEvent) (Command, bool) {
	if e.Action != "created" || !e.OnPR || strings.EqualFold(e.SenderType, "Bot") ||
		strings.HasSuffix(strings.ToLower(e.Login), "[bot]") || IsMerlins(e.Body) {
		return Command{}, false
	}
	return ParseCommand(e.Body)
}

// Targets resolves the models a command acts on among those the pull
// request changes (names). A command that takes a model and names none
// acts on the only one; with several, or a name that is not among them,
// it is refused with a message listing them.
func Targets(c Command, names []string) (models []string, refusal string) {
	switch c.Verb {
	case Help, Status:
		return nil, ""
	case Preview:
		if len(names) == 0 {
			return nil, "this pull request changes no model: there is nothing to preview."
		}
		return slices.Clone(names), ""
	}
	if len(c.Extra) > 0 {
		return nil, fmt.Sprintf("`/merlin %s` takes one model; got %s. %s", c.Verb, Text(strings.Join(append([]string{c.Model}, c.Extra...), " "), 200), listModels(names))
	}
	if c.Model == "" {
		switch len(names) {
		case 0:
			return nil, "this pull request changes no model."
		case 1:
			return slices.Clone(names), ""
		}
		return nil, fmt.Sprintf("this pull request changes several models: say which, e.g. /merlin %s %s. %s", c.Verb, Text(names[0], maxNameRunes), listModels(names))
	}
	for _, n := range names {
		if n == c.Model {
			return []string{n}, ""
		}
	}
	for _, n := range names { // model names are case-sensitive, but a unique match is clear
		if strings.EqualFold(n, c.Model) {
			return []string{n}, ""
		}
	}
	return nil, fmt.Sprintf("this pull request changes no model named %s. %s", Text(c.Model, maxNameRunes), listModels(names))
}

func listModels(names []string) string {
	if len(names) == 0 {
		return "It changes no model."
	}
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = Text(n, maxNameRunes)
	}
	return "It changes: " + strings.Join(q, ", ") + "."
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
