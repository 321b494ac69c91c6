package github_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	gogh "github.com/google/go-github/v60/github"
	"github.com/prometheus/client_golang/prometheus"

	"merlin.dev/merlin/internal/githubtest"
	"merlin.dev/merlin/scm/github"
)

const (
	repo     = "acme/models"
	token    = "ghp_0123456789abcdefSECRETtoken"
	marker   = "<!-- merlin pr-comment -->"
	listEP   = "/repos/{owner}/{repo}/issues/{issue_number}/comments"
	mintEP   = "/app/installations/{installation_id}/access_tokens"
	statusEP = "/repos/{owner}/{repo}/statuses/{sha}"
)

// fastPolicy keeps the waits GitHub does not dictate short.
var fastPolicy = github.Policy{MaxWait: 10 * time.Second, MinWait: 10 * time.Millisecond, SecondaryWait: 10 * time.Millisecond,
	RateLimitRetries: 3, Retries: 3, Backoff: 10 * time.Millisecond}

// setup starts a fake GitHub holding repo with PR 7, and a token client.
func setup(t *testing.T) (*githubtest.Server, *github.Client, *bytes.Buffer) {
	t.Helper()
	fake := githubtest.New(t)
	fake.AddToken(token, "merlin-bot")
	fake.AddPull(repo, githubtest.Pull{Number: 7, Title: "iris v2", Author: "alice", HeadRef: "iris-v2", HeadSHA: strings.Repeat("a", 40), BaseSHA: strings.Repeat("b", 40)})
	t.Setenv("MERLIN_TEST_GITHUB_TOKEN", token)
	var logs bytes.Buffer
	c, err := github.New(github.Options{Repo: repo, APIURL: fake.URL, TokenEnv: "MERLIN_TEST_GITHUB_TOKEN", Policy: fastPolicy,
		Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return fake, c, &logs
}

func statuses(calls []githubtest.Call) []int {
	var out []int
	for _, c := range calls {
		out = append(out, c.Status)
	}
	return out
}

func TestFindCommentAcrossPagesWithETags(t *testing.T) {
	fake, c, _ := setup(t)
	ctx := context.Background()
	var want int64
	for i := range 150 {
		body := fmt.Sprintf("comment %d", i)
		if i == 120 {
			body = "## Merlin\n" + marker
		}
		id := fake.AddComment(repo, 7, "someone", body)
		if i == 120 {
			want = id
		}
	}
	got, err := c.FindComment(ctx, 7, marker)
	if err != nil || got == nil || got.ID != want {
		t.Fatalf("FindComment = %+v, %v; want comment %d", got, err, want)
	}
	if s := statuses(fake.CallsTo("GET", listEP)); fmt.Sprint(s) != "[200 200]" {
		t.Fatalf("first scan: statuses %v, want two pages of 200", s)
	}

	// Nothing changed: both pages answer 304, which costs no rate limit.
	fake.ResetCalls()
	before := fake.RateLimitRemaining()
	if got, err := c.FindComment(ctx, 7, marker); err != nil || got == nil || got.ID != want {
		t.Fatalf("second FindComment = %+v, %v", got, err)
	}
	if s := statuses(fake.CallsTo("GET", listEP)); fmt.Sprint(s) != "[304 304]" {
		t.Fatalf("second scan: statuses %v, want [304 304]", s)
	}
	if after := fake.RateLimitRemaining(); after != before {
		t.Errorf("rate limit went from %d to %d over 304s", before, after)
	}
	if n := counter(t, c.Metrics(), "GET "+listEP, "304"); n != 2 {
		t.Errorf("merlin_github_api_calls_total{code=304} = %v, want 2", n)
	}
	if g := gauge(t, c.Metrics()); g != float64(before) {
		t.Errorf("merlin_github_rate_limit_remaining = %v, want %d", g, before)
	}

	// Edited in place: the next scan sees page 2 change, page 1 not.
	if _, err := c.EditComment(ctx, want, "## Merlin v2\n"+marker); err != nil {
		t.Fatal(err)
	}
	fake.ResetCalls()
	got, err = c.FindComment(ctx, 7, marker)
	if err != nil || got.Body != "## Merlin v2\n"+marker {
		t.Fatalf("after edit: %+v, %v", got, err)
	}
	if s := statuses(fake.CallsTo("GET", listEP)); fmt.Sprint(s) != "[304 200]" {
		t.Errorf("after edit: statuses %v, want [304 200]", s)
	}
	if n := len(fake.Comments(repo, 7)); n != 150 {
		t.Errorf("%d comments, want 150 (edited in place)", n)
	}
}

func TestFindCommentOnANewPage(t *testing.T) {
	fake, c, _ := setup(t)
	ctx := context.Background()
	for i := range 100 {
		fake.AddComment(repo, 7, "someone", fmt.Sprintf("comment %d", i))
	}
	if got, err := c.FindComment(ctx, 7, marker); err != nil || got != nil {
		t.Fatalf("FindComment = %+v, %v; want none", got, err)
	}
	// The 101st comment opens page 2; page 1 is unchanged (304).
	id := fake.AddComment(repo, 7, "merlin-bot", marker)
	fake.ResetCalls()
	got, err := c.FindComment(ctx, 7, marker)
	if err != nil || got == nil || got.ID != id {
		t.Fatalf("FindComment = %+v, %v; want comment %d", got, err, id)
	}
	if s := statuses(fake.CallsTo("GET", listEP)); fmt.Sprint(s) != "[304 200]" {
		t.Errorf("statuses %v, want [304 200]", s)
	}
}

func TestCreateCommentAndNoMarker(t *testing.T) {
	fake, c, _ := setup(t)
	ctx := context.Background()
	if got, err := c.FindComment(ctx, 7, marker); err != nil || got != nil {
		t.Fatalf("FindComment on an empty PR = %+v, %v", got, err)
	}
	cm, err := c.CreateComment(ctx, 7, "hello "+marker)
	if err != nil {
		t.Fatal(err)
	}
	if cm.Author != "merlin-bot" || cm.ID == 0 {
		t.Errorf("created %+v", cm)
	}
	found, err := c.FindComment(ctx, 7, marker)
	if err != nil || found == nil || found.ID != cm.ID {
		t.Errorf("FindComment after create = %+v, %v", found, err)
	}
	if n := len(fake.Comments(repo, 7)); n != 1 {
		t.Errorf("%d comments, want 1", n)
	}
	if _, err := c.CreateComment(ctx, 99, "no such PR"); !github.IsNotFound(err) {
		t.Errorf("comment on a missing PR: %v, want a 404", err)
	}
}

func TestStatusDescriptionTruncated(t *testing.T) {
	fake, c, _ := setup(t)
	sha := strings.Repeat("a", 40)
	long := strings.Repeat("ü", 200)
	err := c.SetStatus(context.Background(), sha, github.Status{Model: "iris", State: github.Pending, Description: long, TargetURL: "http://127.0.0.1:9292/"})
	if err != nil {
		t.Fatal(err)
	}
	st, ok := fake.LatestStatuses(repo, sha)["merlin/iris"]
	if !ok {
		t.Fatalf("no merlin/iris status: %+v", fake.Statuses(repo, sha))
	}
	if n := len([]rune(st.Description)); n != 140 || !strings.HasSuffix(st.Description, "…") {
		t.Errorf("description of %d characters: %q", n, st.Description)
	}
	if st.State != "pending" || st.TargetURL != "http://127.0.0.1:9292/" || st.Creator != "merlin-bot" {
		t.Errorf("status %+v", st)
	}
	if err := c.SetStatus(context.Background(), sha, github.Status{Context: "merlin/wine", State: github.Error}); err != nil {
		t.Fatal(err)
	}
	if st := fake.LatestStatuses(repo, sha)["merlin/wine"]; st.State != "error" || st.Description != "" {
		t.Errorf("merlin/wine: %+v", st)
	}
}

func TestInvalidRequestRefusedByDescription(t *testing.T) {
	fake, c, _ := setup(t)
	fake.ExpectInvalid()
	sha := strings.Repeat("a", 40)
	err := c.SetStatus(context.Background(), sha, github.Status{Model: "iris", State: "done"})
	if err == nil {
		t.Fatal("a status with state \"done\" was accepted")
	}
	inv := fake.InvalidRequests()
	if len(inv) != 1 || !strings.Contains(inv[0].Error(), "state") {
		t.Errorf("the fake refused %v, want one error about state", inv)
	}
	if s := fake.Statuses(repo, sha); len(s) != 0 {
		t.Errorf("statuses stored: %+v", s)
	}
	if s := statuses(fake.CallsTo("POST", statusEP)); fmt.Sprint(s) != "[422]" {
		t.Errorf("statuses %v, want one 422 and no retry", s)
	}
}

func TestPermissionFilesPull(t *testing.T) {
	fake, c, _ := setup(t)
	ctx := context.Background()
	fake.SetPermission(repo, "maya", "maintain")
	fake.SetPermission(repo, "rita", "read")
	for user, want := range map[string]string{"maya": "write maintain", "rita": "read read", "nobody": "none "} {
		if perm, role, err := c.Permission(ctx, user); err != nil || perm+" "+role != want {
			t.Errorf("Permission(%s) = %q, %q, %v; want %q", user, perm, role, err, want)
		}
	}
	fake.SetTeamMember("acme", "ml", "maya", "active")
	fake.SetTeamMember("acme", "ml", "rita", "pending")
	for user, want := range map[string]bool{"maya": true, "rita": false, "nobody": false} {
		if got, err := c.IsTeamMember(ctx, "acme", "ml", user); err != nil || got != want {
			t.Errorf("IsTeamMember(acme/ml, %s) = %v, %v; want %v", user, got, err, want)
		}
	}

	if _, _, found, err := c.CodeOwners(ctx, "main"); err != nil || found {
		t.Errorf("CodeOwners with none: found=%v, %v", found, err)
	}
	fake.SetFile(repo, "main", "docs/CODEOWNERS", "/models/iris/ @alice\n")
	b, path, found, err := c.CodeOwners(ctx, "main")
	if err != nil || !found || path != "docs/CODEOWNERS" || string(b) != "/models/iris/ @alice\n" {
		t.Errorf("CodeOwners = %q, %q, %v, %v", b, path, found, err)
	}
	fake.SetFile(repo, "main", ".github/CODEOWNERS", "* @acme/ml\n")
	if b, path, _, err := c.CodeOwners(ctx, "main"); err != nil || path != ".github/CODEOWNERS" || string(b) != "* @acme/ml\n" {
		t.Errorf("CodeOwners prefers .github/: %q, %q, %v", b, path, err)
	}

	fake.AddPull(repo, githubtest.Pull{Number: 8, Title: "fork", Author: "mallory", HeadRepo: "mallory/models", HeadRef: "main", HeadSHA: strings.Repeat("c", 40)})
	pr, err := c.PullRequest(ctx, 8)
	if err != nil {
		t.Fatal(err)
	}
	if !pr.Fork() || pr.HeadSHA != strings.Repeat("c", 40) || pr.BaseRef != "main" || pr.State != "open" || pr.Author != "mallory" {
		t.Errorf("PullRequest(8) = %+v", pr)
	}
	if pr, err := c.PullRequest(ctx, 7); err != nil || pr.Fork() || pr.HeadRef != "iris-v2" {
		t.Errorf("PullRequest(7) = %+v, %v", pr, err)
	}
}

func TestRateLimitWaitedOut(t *testing.T) {
	for name, fault := range map[string]githubtest.Fault{
		"403 X-RateLimit-Reset": githubtest.RateLimited(time.Now().Add(time.Second)),
		"429 Retry-After":       githubtest.TooManyRequests(1),
	} {
		t.Run(name, func(t *testing.T) {
			fake, c, logs := setup(t)
			fake.SetPermission(repo, "maya", "write")
			fake.Fail(1, fault)
			// The fake reports a request sent before the limit ends.
			if got, _, err := c.Permission(context.Background(), "maya"); err != nil || got != "write" {
				t.Fatalf("Permission = %q, %v", got, err)
			}
			if s := statuses(fake.Calls()); fmt.Sprint(s) != fmt.Sprint([]int{fault.Status, 200}) {
				t.Errorf("statuses %v", s)
			}
			if !strings.Contains(logs.String(), "rate limited") {
				t.Errorf("no log of the wait: %s", logs)
			}
		})
	}
}

// TestRateLimitHoldsEveryRequest: a request sent while another waits out
// a rate limit waits too (the fake reports any request sent before the
// limit ends).
func TestRateLimitHoldsEveryRequest(t *testing.T) {
	fake, c, _ := setup(t)
	fake.SetPermission(repo, "maya", "write")
	fake.Fail(1, githubtest.RateLimited(time.Now().Add(time.Second)))
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { _, _, err := c.Permission(ctx, "maya"); done <- err }()
	for len(fake.Calls()) == 0 { // the first request met the limit
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // and its answer was read
	if len(fake.Calls()) != 1 {
		t.Fatalf("calls %+v, want only the limited one so far", fake.Calls())
	}
	if _, err := c.PullRequest(ctx, 7); err != nil {
		t.Errorf("PullRequest after the limit: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("Permission after the limit: %v", err)
	}
	if s := statuses(fake.Calls()); len(s) != 3 || s[0] != http.StatusForbidden {
		t.Errorf("statuses %v, want the 403 then two answers", s)
	}
}

func TestRateLimitBeyondMaxWait(t *testing.T) {
	fake, c, _ := setup(t)
	fake.SetPermission(repo, "maya", "write")
	fake.Fail(1, githubtest.RateLimited(time.Now().Add(time.Hour)))
	_, _, err := c.Permission(context.Background(), "maya")
	var rl *gogh.RateLimitError
	if !errors.As(err, &rl) {
		t.Fatalf("err = %v, want a RateLimitError", err)
	}
	// go-github remembers the reset: no request goes out before it.
	if _, _, err := c.Permission(context.Background(), "maya"); err == nil {
		t.Error("a second call succeeded while rate limited")
	}
	if n := len(fake.Calls()); n != 1 {
		t.Errorf("%d calls, want 1 (no hammering)", n)
	}
}

func TestServerErrorRetried(t *testing.T) {
	fake, c, _ := setup(t)
	ctx := context.Background()
	fake.Fail(2, githubtest.BadGateway())
	if _, err := c.PullRequest(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if s := statuses(fake.Calls()); fmt.Sprint(s) != "[502 502 200]" {
		t.Errorf("statuses %v, want [502 502 200]", s)
	}
	if n := counter(t, c.Metrics(), "GET /repos/{owner}/{repo}/pulls/{pull_number}", "502"); n != 2 {
		t.Errorf("counted %v 502s, want 2", n)
	}

	// Bounded: four 502s in a row are one too many.
	fake.ResetCalls()
	fake.Fail(4, githubtest.BadGateway())
	if _, err := c.PullRequest(ctx, 7); err == nil {
		t.Error("PullRequest succeeded through four 502s")
	}
	if n := len(fake.Calls()); n != 4 {
		t.Errorf("%d calls, want 4 (1 + 3 retries)", n)
	}

	// A comment is not posted twice after a 5xx that may have created it.
	fake.ResetCalls()
	fake.Fail(1, githubtest.BadGateway())
	if _, err := c.CreateComment(ctx, 7, "x"); err == nil {
		t.Error("CreateComment succeeded through a 502")
	}
	if n := len(fake.Calls()); n != 1 {
		t.Errorf("%d calls to create a comment after a 502, want 1", n)
	}
}

func counter(t *testing.T, m *github.Metrics, endpoint, code string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "merlin_github_api_calls_total" {
			continue
		}
		for _, metric := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range metric.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["endpoint"] == endpoint && labels["code"] == code {
				return metric.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func gauge(t *testing.T, m *github.Metrics) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "merlin_github_rate_limit_remaining" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

const pullsEP = "/repos/{owner}/{repo}/pulls"

func numbers(prs []github.PullRequest) []int {
	out := []int{}
	for _, p := range prs {
		out = append(out, p.Number)
	}
	return out
}

func TestOpenPulls(t *testing.T) {
	fake, c, _ := setup(t)
	ctx := context.Background()
	// #7 from setup, then #10..#259: every 50th closed, every 60th into release.
	want := []int{7}
	for n := 10; n < 260; n++ {
		p := githubtest.Pull{Number: n, Title: fmt.Sprintf("pr %d", n), Author: "alice", HeadRef: fmt.Sprintf("b%d", n), HeadSHA: strings.Repeat("c", 40)}
		switch {
		case n%50 == 0:
			p.State = "closed"
		case n%60 == 0:
			p.BaseRef = "release"
		default:
			want = append(want, n)
		}
		fake.AddPull(repo, p)
	}
	fake.AddPull(repo, githubtest.Pull{Number: 300, HeadRef: "fork", HeadRepo: "mallory/models", HeadSHA: strings.Repeat("d", 40)})
	want = append(want, 300)
	if len(want) <= 2*100 || len(want) > 3*100 {
		t.Fatalf("test setup: %d open pulls into main, want three pages", len(want))
	}

	got, err := c.OpenPulls(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(numbers(got)) != fmt.Sprint(want) {
		t.Fatalf("OpenPulls = %v, want %v", numbers(got), want)
	}
	calls := fake.CallsTo("GET", pullsEP)
	if s := statuses(calls); fmt.Sprint(s) != "[200 200 200]" {
		t.Fatalf("first list: statuses %v, want three pages of 200", s)
	}
	for i, call := range calls {
		if want := fmt.Sprintf("base=main&direction=asc&page=%d&per_page=100&sort=created&state=open", i+1); call.Query != want {
			t.Errorf("request %d: query %q, want %q", i+1, call.Query, want)
		}
	}
	first, fork := got[0], got[len(got)-1]
	if first.Number != 7 || first.Title != "iris v2" || first.Author != "alice" || first.HeadRef != "iris-v2" ||
		first.HeadSHA != strings.Repeat("a", 40) || first.State != "open" || first.Merged || first.BaseRef != "main" ||
		first.BaseRepo != repo || first.HeadRepo != repo || first.Fork() {
		t.Errorf("first = %+v", first)
	}
	if !fork.Fork() || fork.HeadRepo != "mallory/models" {
		t.Errorf("last = %+v, want the fork", fork)
	}

	// Nothing changed: three 304s, no rate limit spent, the same list.
	fake.ResetCalls()
	before := fake.RateLimitRemaining()
	again, err := c.OpenPulls(ctx, "main")
	if err != nil || fmt.Sprint(again) != fmt.Sprint(got) {
		t.Fatalf("second OpenPulls = %v, %v; want the same list", numbers(again), err)
	}
	if s := statuses(fake.CallsTo("GET", pullsEP)); fmt.Sprint(s) != "[304 304 304]" {
		t.Fatalf("second list: statuses %v, want [304 304 304]", s)
	}
	if after := fake.RateLimitRemaining(); after != before {
		t.Errorf("rate limit went from %d to %d over 304s", before, after)
	}
	if n := counter(t, c.Metrics(), "GET "+pullsEP, "304"); n != 3 {
		t.Errorf("merlin_github_api_calls_total{endpoint=GET %s,code=304} = %v, want 3", pullsEP, n)
	}
	if n := counter(t, c.Metrics(), "GET "+pullsEP, "200"); n != 3 {
		t.Errorf("merlin_github_api_calls_total{endpoint=GET %s,code=200} = %v, want 3", pullsEP, n)
	}

	// #7 closed, #11 merged: the list shrinks by two, every page shifts.
	fake.UpdatePull(repo, 7, func(p *githubtest.Pull) { p.State = "closed" })
	fake.UpdatePull(repo, 11, func(p *githubtest.Pull) { p.Merged = true })
	fake.ResetCalls()
	after, err := c.OpenPulls(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(got)-2 || after[0].Number != 10 || after[1].Number != 12 {
		t.Errorf("after closing #7 and merging #11: %d pulls starting %v, want %d starting [10 12]", len(after), numbers(after)[:2], len(got)-2)
	}
	if s := statuses(fake.CallsTo("GET", pullsEP)); fmt.Sprint(s) != "[200 200 200]" {
		t.Errorf("after closing: statuses %v, want [200 200 200]", s)
	}

	if rel, err := c.OpenPulls(ctx, "release"); err != nil || fmt.Sprint(numbers(rel)) != "[60 120 180 240]" {
		t.Errorf("OpenPulls(release) = %v, %v; want [60 120 180 240]", numbers(rel), err)
	}
	if none, err := c.OpenPulls(ctx, "gh-pages"); err != nil || len(none) != 0 {
		t.Errorf("OpenPulls(gh-pages) = %v, %v; want none", numbers(none), err)
	}
}

// TestOpenPullsOnANewPage: with exactly two full pages, a new pull request
// opens page 3 while pages 1 and 2 stay unchanged (304) — their cached
// Link header names no page 3, so the walk goes by a short page.
func TestOpenPullsOnANewPage(t *testing.T) {
	fake, c, _ := setup(t)
	ctx := context.Background()
	for n := 8; n < 207; n++ {
		fake.AddPull(repo, githubtest.Pull{Number: n, HeadRef: "b", HeadSHA: strings.Repeat("c", 40)})
	}
	got, err := c.OpenPulls(ctx, "main")
	if err != nil || len(got) != 200 {
		t.Fatalf("OpenPulls = %d pulls, %v; want 200", len(got), err)
	}
	fake.AddPull(repo, githubtest.Pull{Number: 207, HeadRef: "b", HeadSHA: strings.Repeat("c", 40)})
	fake.ResetCalls()
	got, err = c.OpenPulls(ctx, "main")
	if err != nil || len(got) != 201 || got[200].Number != 207 {
		t.Fatalf("OpenPulls = %d pulls, %v; want 201 ending with #207", len(got), err)
	}
	if s := statuses(fake.CallsTo("GET", pullsEP)); fmt.Sprint(s) != "[304 304 200]" {
		t.Errorf("statuses %v, want [304 304 200]", s)
	}
}

func TestOpenPullsError(t *testing.T) {
	fake, c, _ := setup(t)
	fake.Fail(1, githubtest.Fault{Status: 404, Message: "Not Found"})
	if _, err := c.OpenPulls(context.Background(), "main"); err == nil || !github.IsNotFound(err) || !strings.Contains(err.Error(), "list open pull requests into main") {
		t.Errorf("OpenPulls on a 404 = %v", err)
	}
}
