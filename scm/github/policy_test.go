package github

import (
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	p := Policy{MaxWait: time.Minute, MinWait: time.Second, SecondaryWait: 30 * time.Second, RateLimitRetries: 2, Retries: 3, Backoff: 100 * time.Millisecond}
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	get := "GET /repos/{owner}/{repo}/pulls/{pull_number}"
	post := "POST /repos/{owner}/{repo}/issues/{issue_number}/comments"
	for _, tc := range []struct {
		name     string
		endpoint string
		a        answer
		attempts int
		jitter   float64
		want     decision
	}{
		{"ok", get, answer{status: 200, header: h()}, 0, 0, decision{}},
		{"403 permission", get, answer{status: 403, header: h("X-RateLimit-Remaining", "4000")}, 0, 0, decision{reason: "forbidden"}},
		{"403 primary, reset in 20s", get, answer{status: 403, header: h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "1800000020")}, 0, 0,
			decision{retry: true, rateLimit: true, wait: 20 * time.Second, reason: "rate limited"}},
		{"403 primary, reset past", get, answer{status: 403, header: h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "1799999990")}, 0, 0,
			decision{retry: true, rateLimit: true, wait: time.Second, reason: "rate limited"}},
		{"403 primary, reset beyond MaxWait", get, answer{status: 403, header: h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "1800003600")}, 0, 0,
			decision{rateLimit: true, wait: time.Hour, reason: "rate limited beyond the wait allowed"}},
		{"403 Retry-After", post, answer{status: 403, header: h("Retry-After", "7")}, 0, 0,
			decision{retry: true, rateLimit: true, wait: 7 * time.Second, reason: "rate limited"}},
		{"403 secondary, no headers", get, answer{status: 403, header: h(), body: []byte(`{"message":"You have exceeded a Secondary Rate Limit"}`)}, 0, 0,
			decision{retry: true, rateLimit: true, wait: 30 * time.Second, reason: "rate limited"}},
		{"429 Retry-After 0", get, answer{status: 429, header: h("Retry-After", "0")}, 0, 0,
			decision{retry: true, rateLimit: true, wait: time.Second, reason: "rate limited"}},
		{"429 waited twice already", get, answer{status: 429, header: h("Retry-After", "1")}, 2, 0,
			decision{rateLimit: true, wait: time.Second, reason: "rate limited beyond the wait allowed"}},
		{"502 first", get, answer{status: 502, header: h()}, 0, 0.5, decision{retry: true, wait: 50 * time.Millisecond, reason: "server error"}},
		{"502 third", get, answer{status: 502, header: h()}, 2, 0.5, decision{retry: true, wait: 200 * time.Millisecond, reason: "server error"}},
		{"502 out of retries", get, answer{status: 502, header: h()}, 3, 0.5, decision{reason: "server error"}},
		{"502 creating a comment", post, answer{status: 502, header: h()}, 0, 0.5, decision{reason: "server error"}},
		{"501", get, answer{status: 501, header: h()}, 0, 0.5, decision{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decide(p, tc.endpoint, tc.a, tc.attempts, now, tc.jitter); got != tc.want {
				t.Errorf("decide = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestEndpoint(t *testing.T) {
	for path, want := range map[string]string{
		"/repos/acme/models/issues/7/comments":                   "GET /repos/{owner}/{repo}/issues/{issue_number}/comments",
		"/api/v3/repos/acme/models/issues/comments/12":           "GET /repos/{owner}/{repo}/issues/comments/{comment_id}",
		"/repos/acme/models/contents/.github/CODEOWNERS":         "GET /repos/{owner}/{repo}/contents/{path}",
		"/repos/acme/models/statuses/" + strings.Repeat("a", 40): "GET /repos/{owner}/{repo}/statuses/{sha}",
		"/app/installations/678/access_tokens":                   "GET /app/installations/{installation_id}/access_tokens",
		"/repos/acme/models/pulls":                               "GET /repos/{owner}/{repo}/pulls",
		"/api/v3/repos/acme/models/pulls/":                       "GET /repos/{owner}/{repo}/pulls",
		"/repos/acme/models/pulls/7":                             "GET /repos/{owner}/{repo}/pulls/{pull_number}",
		"/repos/acme/models/pulls/7/files":                       "GET other",
		"/repos/acme/pulls":                                      "GET other",
		"/repos/acme/models/issues//comments":                    "GET other",
		"/rate_limit":                                            "GET other",
	} {
		if got := Endpoint("GET", path); got != want {
			t.Errorf("Endpoint(GET, %s) = %q, want %q", path, got, want)
		}
	}
}

func TestTruncateDescription(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{strings.Repeat("x", 140), strings.Repeat("x", 140)},
		{strings.Repeat("x", 141), strings.Repeat("x", 139) + "…"},
		{strings.Repeat("é", 150), strings.Repeat("é", 139) + "…"},
	} {
		if got := TruncateDescription(tc.in); got != tc.want {
			t.Errorf("TruncateDescription(%d chars) = %q", len([]rune(tc.in)), got)
		}
	}
}

func TestScrub(t *testing.T) {
	var s secrets
	s.add("short") // not a credential-sized string: left alone
	s.add("ghp_abcdefghijkl")
	err := s.scrub(&os.PathError{Op: "open", Path: "ghp_abcdefghijkl/short", Err: os.ErrNotExist})
	if err.Error() != "open [REDACTED]/short: file does not exist" {
		t.Errorf("scrubbed: %q", err)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Error("the chain is lost")
	}
}
