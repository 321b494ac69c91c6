// Package pullrequest holds the decisions of the pull-request loop (SPEC
// §7), as pure functions: what the one sticky comment of a pull request
// says, which commit statuses `merlin/<model>` to send, what a comment
// command asks for and whether its author may ask it, and when the next
// edit of the comment may go out.
//
// Nothing here talks to GitHub, reads a clock or touches the disk. The
// webhook handler (package webhooks) turns deliveries into the inputs of
// these functions, the GitHub client (package scm/github) carries out the
// writes they decide, and the reconciler supplies the models' status. The
// few facts only GitHub knows at decision time — a user's permission on
// the repository, a team's members — come through small interfaces
// (Access, Teams) that the client implements, so the loop can be tested
// without a network and GitHub's rules are written once.
//
// The entry points: Render (the sticky comment) and Edits (when it may be
// edited: once per commentInterval, latest rendering wins); StatusOf and
// StatusesToSend (commit statuses, written only when they change); Decide
// (a comment: ignore, answer, or execute on which models), built from
// Triage, ParseCommand, Targets, Authorize and the CODEOWNERS matcher.
//
// The sticky comment is found again by its first line, a hidden marker
// (`<!-- merlin pr=N -->`); every comment Merlin writes carries a marker,
// which is also how Merlin never executes its own comments.
package pullrequest
