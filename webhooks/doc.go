// Package webhooks receives GitHub's webhook deliveries on POST /hooks/github
// and turns them into typed events for the daemon (SPEC §7).
//
// A delivery is answered at once and worked on later: the handler reads the
// body (at most MaxBodyBytes), verifies its X-Hub-Signature-256 against the
// configured secrets before parsing anything (SHA-1 signatures and unsigned
// deliveries are refused with 401, and nothing else happens), parses the
// event with go-github's types, drops what Merlin does not act on (with 200
// and the reason, which GitHub shows under "Recent Deliveries"), drops a
// repeated X-GitHub-Delivery, and puts the event on a bounded queue (202; a
// full queue answers 503 with Retry-After, it never blocks). Run hands the
// queued events, one at a time and in order, to a Sink.
//
// Deliveries are remembered in a bounded store (the last N ids) kept in a
// small file, so a redelivery after a restart acts once too.
//
// The decisions (Verify, Decide) are pure functions; the handler is the I/O
// around them.
package webhooks
