package daemon

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/internal/githubtest"
	"merlin.dev/merlin/internal/gittest"
	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/internal/webhooktest"
	"merlin.dev/merlin/pullrequest"
	"merlin.dev/merlin/serving"
)

// commentPayload is the corpus's issue comment, moved onto pull request
// pr of acme/models, written by login (a "User" or a "Bot").
func commentPayload(t *testing.T, action string, pr int, login, senderType, body string) []byte {
	t.Helper()
	fields := map[string]any{
		"action": action, "repository.full_name": "acme/models", "issue.number": pr,
		"issue.pull_request": map[string]any{
			"url":       fmt.Sprintf("https://api.github.com/repos/acme/models/pulls/%d", pr),
			"html_url":  fmt.Sprintf("https://github.com/acme/models/pull/%d", pr),
			"diff_url":  fmt.Sprintf("https://github.com/acme/models/pull/%d.diff", pr),
			"patch_url": fmt.Sprintf("https://github.com/acme/models/pull/%d.patch", pr),
		},
		"comment.body": body, "comment.user.login": login, "comment.user.type": senderType,
		"sender.login": login, "sender.type": senderType,
	}
	if action == "edited" {
		fields["changes"] = map[string]any{"body": map[string]any{"from": "/merlin promote"}}
	}
	return webhooktest.Edit(t, webhooktest.Payload(t, "octokit/issue_comment/created.payload.json"), fields)
}

// writes counts the calls that could change GitHub's state.
func writes(calls []githubtest.Call) int {
	n := 0
	for _, c := range calls {
		if c.Write() {
			n++
		}
	}
	return n
}

// TestCommentCommands runs comment commands end to end: signed
// issue_comment deliveries to a real daemon serving the iris example,
// against the fake GitHub. A writer's `/merlin pause` pauses the model
// through the API's code path and gets one reply naming them; a reader's
// command changes nothing and writes nothing; a bot's comment and an edit
// write nothing; `/merlin help` gets the help text; two commands on one
// pull request run in order.
func TestCommentCommands(t *testing.T) {
	py := requirePython(t)
	t.Setenv("MERLIN_TEST_WEBHOOK_SECRET", hookSecret)
	t.Setenv("MERLIN_TEST_GITHUB_TOKEN", "ghp_merlin_test_token")
	gh := githubtest.New(t)
	gh.AddToken("ghp_merlin_test_token", "merlin-app")
	gh.SetPermission("acme/models", "writer", "write")
	gh.SetPermission("acme/models", "reader", "read")
	gh.SetFile("acme/models", gittest.Branch, ".github/CODEOWNERS", "/iris/ @writer\n")
	repo := gittest.NewRepo(t)
	repo.CommitDir("add iris", filepath.Join("..", "examples", "iris-sklearn"), "iris")
	heads := map[int]string{}
	for _, pr := range []int{7, 9} { // pull requests that change iris
		heads[pr] = repo.PullHead(pr, map[string]string{"iris/merlin.yaml": irisEnv(t, fmt.Sprint("pr", pr))})
		gh.AddPull("acme/models", githubtest.Pull{Number: pr, Title: "tune iris", Author: "writer", HeadRef: "tune", HeadSHA: heads[pr]})
	}
	gh.AddPull("acme/models", githubtest.Pull{Number: 8, Title: "docs", Author: "writer", HeadRef: "docs", HeadSHA: strings.Repeat("a", 40)})
	// commentInterval 1h: after the first, the sticky comments are not
	// edited during the test, so the writes counted are the commands'.
	d := startDaemon(t, "commands", fmt.Sprintf(`repositories:
  - name: models
    url: %q
    interval: 1s
    github: {repo: acme/models, tokenEnv: MERLIN_TEST_GITHUB_TOKEN, apiURL: %q, webhookSecretEnv: MERLIN_TEST_WEBHOOK_SECRET, commentInterval: 1h}
local: {listen: "127.0.0.1:0", stateDir: %q, python: %q}
server: {listen: "127.0.0.1:0"}
`, repo.Bare, gh.URL, t.TempDir(), py))
	poll.Until(t, 2*time.Minute, "iris serves", func() bool {
		// Pull requests 7 and 9 may be seen (by listing) and previewed
		// beside it already.
		ms := d.model(t, "iris-sklearn")
		return len(ms.Versions) > 0 && ms.Versions[0].Role == serving.RoleStable && ms.Versions[0].Weight == 100 && ms.Versions[0].Ready()
	})
	// Pull requests 7 and 9 are opened, previewed and reported first.
	for _, pr := range []int{7, 9} {
		code, resp := sendHook(t, d.api, webhooktest.Delivery{Event: "pull_request", Body: prPayload(t, "opened", pr, heads[pr], "acme/models", false)})
		if code != http.StatusAccepted && code != http.StatusOK {
			t.Fatalf("pull_request delivery: %d %s", code, resp)
		}
	}
	for _, pr := range []int{7, 9} {
		poll.Until(t, 2*time.Minute, fmt.Sprintf("#%d previewed and reported", pr), func() bool {
			return gh.LatestStatuses("acme/models", heads[pr])["merlin/iris-sklearn"].State == "success"
		})
	}
	replies := func(pr int) []githubtest.Comment {
		var out []githubtest.Comment
		for _, c := range gh.Comments("acme/models", pr) {
			if !strings.Contains(c.Body, pullrequest.Marker(pr)) {
				out = append(out, c)
			}
		}
		return out
	}
	send := func(body []byte) {
		t.Helper()
		code, resp := sendHook(t, d.api, webhooktest.Delivery{Event: "issue_comment", Body: body})
		if code != http.StatusAccepted && code != http.StatusOK {
			t.Fatalf("issue_comment delivery: %d %s", code, resp)
		}
	}
	budget := func(what string) {
		t.Helper()
		calls := eventCalls(gh.Calls())
		if len(calls) > 3 || writes(calls) > 2 {
			t.Errorf("%s: %d calls, %d writes; want ≤ 3 and ≤ 2: %+v", what, len(calls), writes(calls), calls)
		}
		gh.ResetCalls()
	}

	// A writer pauses the model.
	gh.ResetCalls()
	send(commentPayload(t, "created", 7, "writer", "User", "/merlin pause iris-sklearn"))
	poll.Until(t, 30*time.Second, "a reply on #7", func() bool { return len(replies(7)) > 0 })
	if !d.model(t, "iris-sklearn").Paused {
		t.Errorf("after the writer's /merlin pause the model is not paused in the API")
	}
	cs := replies(7)
	if len(cs) != 1 || !strings.Contains(cs[0].Body, "@writer") || !strings.Contains(cs[0].Body, "iris-sklearn: pause done") {
		t.Errorf("replies on #7 = %+v, want one naming @writer and the pause", cs)
	}
	if w := writes(eventCalls(gh.Calls())); w != 1 {
		t.Errorf("writer's command: %d writes, want 1 (the reply)", w)
	}
	budget("writer's pause")

	// A reader's command runs nothing and gets no reply.
	send(commentPayload(t, "created", 7, "reader", "User", "/merlin resume iris-sklearn"))
	poll.Until(t, 30*time.Second, "the reader's command is turned down", func() bool {
		return strings.Contains(d.logs.String(), "login=reader")
	})
	if !d.model(t, "iris-sklearn").Paused {
		t.Errorf("a reader's /merlin resume resumed the model")
	}
	if w := writes(gh.Calls()); w != 0 {
		t.Errorf("reader's command: %d writes, want 0", w)
	}
	budget("reader's resume")

	// A bot's command and an edited comment call nothing; the writer's
	// help after them (the queue keeps the order) is answered.
	send(commentPayload(t, "created", 7, "merlin-ci[bot]", "Bot", "/merlin resume iris-sklearn"))
	send(commentPayload(t, "edited", 7, "writer", "User", "/merlin resume iris-sklearn"))
	send(commentPayload(t, "created", 8, "writer", "User", "/merlin help"))
	poll.Until(t, 30*time.Second, "a reply on #8", func() bool { return len(replies(8)) > 0 })
	if cs := replies(8); len(cs) != 1 || !strings.Contains(cs[0].Body, "@writer") || !strings.Contains(cs[0].Body, pullrequest.HelpText) {
		t.Errorf("replies on #8 = %+v, want one with the help text", cs)
	}
	if n := len(replies(7)); n != 1 {
		t.Errorf("#7 has %d comments after a bot's command and an edit, want 1", n)
	}
	if w := writes(gh.Calls()); w != 1 {
		t.Errorf("bot, edit and help: %d writes, want 1 (the help reply)", w)
	}
	if !d.model(t, "iris-sklearn").Paused {
		t.Errorf("a bot's or an edited /merlin resume resumed the model")
	}
	budget("bot, edit and help")

	// Two commands on one pull request run and are answered in order.
	send(commentPayload(t, "created", 9, "writer", "User", "/merlin resume iris-sklearn"))
	send(commentPayload(t, "created", 9, "writer", "User", "/merlin pause iris-sklearn"))
	poll.Until(t, 30*time.Second, "two replies on #9", func() bool { return len(replies(9)) >= 2 })
	cs = replies(9)
	if len(cs) != 2 || !strings.Contains(cs[0].Body, "iris-sklearn: resume done") || !strings.Contains(cs[1].Body, "iris-sklearn: pause done") {
		t.Errorf("replies on #9 = %+v, want the resume's then the pause's", cs)
	}
	if !d.model(t, "iris-sklearn").Paused {
		t.Errorf("after resume then pause the model is not paused")
	}

	// The client's calls are counted on the daemon's /metrics.
	resp, err := http.Get(d.api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), "merlin_github_api_calls_total{") {
		t.Errorf("/metrics has no merlin_github_api_calls_total series")
	}
}

// TestGitHubTokenRequired: a github.tokenEnv whose variable is empty stops
// the start, naming the field and the variable.
func TestGitHubTokenRequired(t *testing.T) {
	t.Setenv("MERLIN_TEST_WEBHOOK_SECRET", hookSecret)
	t.Setenv("MERLIN_TEST_EMPTY_TOKEN", "")
	err := newDaemonErr(t, fmt.Sprintf(`repositories:
  - name: models
    url: /srv/models.git
    github: {repo: acme/models, tokenEnv: MERLIN_TEST_EMPTY_TOKEN, webhookSecretEnv: MERLIN_TEST_WEBHOOK_SECRET}
local: {listen: "127.0.0.1:0", stateDir: %q}
server: {listen: "127.0.0.1:0"}
`, t.TempDir()))
	if err == nil || !strings.Contains(err.Error(), "repositories[0].github.tokenEnv") || !strings.Contains(err.Error(), "MERLIN_TEST_EMPTY_TOKEN") {
		t.Errorf("empty token: %v, want a refusal naming the field and the variable", err)
	}
}
