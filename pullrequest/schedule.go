package pullrequest

import "time"

// Edits plans the edits of one pull request's sticky comment: at most one
// per Interval, the latest rendering wins, and a rendering equal to the
// one on GitHub is never sent. It is a value: each method returns the next
// one, and the caller (one goroutine per pull request) keeps it and sets
// a timer for Due's time, so 50 events in a burst make one edit.
type Edits struct {
	Interval time.Duration
	// LastSent is when the comment was last written (zero: never);
	// OnGitHub is what it says.
	LastSent time.Time
	OnGitHub string
	// Pending is the latest rendering not yet sent ("" when none).
	Pending string
}

// Offer records a new rendering of the comment, replacing any pending one.
func (e Edits) Offer(body string) Edits {
	e.Pending = body
	if body == e.OnGitHub && !e.LastSent.IsZero() {
		e.Pending = ""
	}
	return e
}

// Due says whether the pending rendering may go out at now, and if not,
// when it may (zero when nothing is pending).
func (e Edits) Due(now time.Time) (send bool, at time.Time) {
	if e.Pending == "" {
		return false, time.Time{}
	}
	next := e.LastSent.Add(e.Interval)
	if e.LastSent.IsZero() || !now.Before(next) {
		return true, now
	}
	return false, next
}

// Sent records that body was written at now.
func (e Edits) Sent(body string, now time.Time) Edits {
	e.LastSent, e.OnGitHub = now, body
	if e.Pending == body {
		e.Pending = ""
	}
	return e
}
