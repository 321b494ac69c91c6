// Package github is Merlin's client of the GitHub REST API: the few
// operations the pull-request loop needs (the sticky comment found by its
// hidden marker, commit statuses, a commenter's permission and team
// memberships, CODEOWNERS, pull requests and the list of open ones),
// over go-github v60. Client has the method sets the PR loop's Access and
// Teams interfaces ask for.
//
// The interesting part is the transport under go-github, four layers:
//
//	etag   GETs are conditional: a 304 answers from the cached body and
//	       does not count against GitHub's rate limit
//	auth   a token, or a GitHub App's installation token minted with an
//	       RS256 JWT and refreshed before it expires (or at once, when
//	       GitHub refuses it as revoked)
//	retry  403/429 rate limits are waited out (Retry-After,
//	       X-RateLimit-Reset; bounded, context-aware), 5xx retried a few
//	       times with jittered backoff — never hammered
//	count  every attempt counted by endpoint template and status in
//	       Metrics, with the rate limit's remaining calls
//
// The package does not serialise edits of one comment: the sticky
// comment's owner does.
//
// Secrets (the token, the installation token, the JWT, the private key)
// never appear in an error this package returns: each is scrubbed.
//
// The package is named github like the directory; import go-github under
// another name beside it.
package github
