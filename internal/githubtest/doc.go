// Package githubtest is an honest, stateful, in-process fake of the GitHub
// REST API for tests: the operations Merlin's client uses (issue comments,
// commit statuses, collaborator permissions, team memberships, file
// contents, pull requests, GitHub App installation tokens) over an
// httptest.Server.
//
// Honest means it refuses what GitHub would refuse: every request and
// every response is validated against GitHub's official OpenAPI
// description (testdata/github-openapi, trimmed from npm @octokit/openapi
// by hack/ghopenapi), tokens and App JWTs are checked (the JWT's RS256
// signature against the app's public key), limits the description does not
// spell out (status descriptions ≤ 140 characters, comment bodies ≤ 65,536)
// are enforced, and a request sent while a rate limit it announced is in
// force is reported as hammering. A refusal fails the test (t.Errorf)
// unless the test said it expects one (ExpectInvalid).
//
// Stateful means comments, statuses, permissions, pulls and files persist
// across requests; GETs carry ETags and answer If-None-Match with 304
// (which, as on GitHub, costs no rate limit); lists paginate with Link
// headers and per_page. Every call is logged (Calls) for tests to assert,
// and faults — a 403 rate limit, a 429 with Retry-After, a 502 — can be
// injected for the next N calls (Fail).
package githubtest
