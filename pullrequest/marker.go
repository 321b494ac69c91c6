package pullrequest

import (
	"fmt"
	"strconv"
	"strings"
)

// markerPrefix opens every marker Merlin writes. A comment containing it
// on a line of its own is Merlin's and is never executed.
const markerPrefix = "<!-- merlin "

// Marker is the hidden first line of pull request pr's sticky comment.
func Marker(pr int) string { return fmt.Sprintf("<!-- merlin pr=%d -->", pr) }

// replyMarker is the hidden first line of Merlin's replies to commands: it
// marks them as Merlin's without making them the sticky comment.
func replyMarker(pr int) string { return fmt.Sprintf("<!-- merlin reply pr=%d -->", pr) }

// ParseMarker returns the pull request number of a sticky comment's
// marker: body's first line must be exactly Marker(pr), give or take
// surrounding spaces (and a CR, as GitHub may store CRLF).
func ParseMarker(body string) (pr int, ok bool) {
	first, _, _ := strings.Cut(body, "\n")
	first = strings.TrimSpace(first)
	rest, ok := strings.CutPrefix(first, markerPrefix+"pr=")
	if !ok {
		return 0, false
	}
	digits, ok := strings.CutSuffix(rest, " -->")
	if !ok || digits == "" || len(digits) > 10 || strings.TrimLeft(digits, "0123456789") != "" || digits[0] == '0' {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

// IsMerlins reports whether a comment carries one of Merlin's markers on a
// line of its own: the sticky comment, a reply, or a quote of them. Such
// a comment is never executed, so Merlin cannot be made to run a command
// by echoing text back to it (a reply quotes the user's command).
func IsMerlins(body string) bool {
	for line := range strings.Lines(body) {
		if strings.HasPrefix(strings.TrimLeft(line, " \t>"), markerPrefix) {
			return true
		}
	}
	return false
}

// FindSticky returns the index of pull request pr's sticky comment among
// bodies (oldest first), or -1. Only comments written by Merlin's own
// account should be passed: anyone can paste a marker.
func FindSticky(pr int, bodies []string) int {
	for i, b := range bodies {
		if n, ok := ParseMarker(b); ok && n == pr {
			return i
		}
	}
	return -1
}
