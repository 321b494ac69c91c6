package daemon

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"html"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"merlin.dev/merlin/internal/githubtest"
	"merlin.dev/merlin/internal/gittest"
	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/internal/webhooktest"
	"merlin.dev/merlin/pullrequest"
	"merlin.dev/merlin/serving"
)

// prPayload is the corpus's opened pull_request event turned into action
// (opened, synchronize or closed), moved onto pull request n of acme/models into
// gittest.Branch, with its head at sha in headRepo (acme/models, or a
// fork's).
func prPayload(t *testing.T, action string, n int, sha, headRepo string, merged bool) []byte {
	t.Helper()
	fields := map[string]any{
		"action": action, "number": n, "repository.full_name": "acme/models",
		"pull_request.number": n, "pull_request.head.sha": sha, "pull_request.head.repo.full_name": headRepo,
		"pull_request.base.repo.full_name": "acme/models", "pull_request.base.ref": gittest.Branch,
	}
	switch action {
	case "closed":
		fields["pull_request.merged"], fields["pull_request.state"], fields["pull_request.closed_at"] = merged, "closed", "2026-12-02T12:00:00Z"
		if merged {
			fields["pull_request.merged_at"] = "2026-12-02T12:00:00Z"
		}
	case "synchronize":
		// The corpus's synchronize sample predates has_discussions, which
		// the schema now requires: the opened one, moved on, is current.
		fields["before"], fields["after"] = strings.Repeat("0", 40), sha
		fields["pull_request.base.repo.has_discussions"], fields["pull_request.head.repo.has_discussions"] = false, false
	}
	return webhooktest.Edit(t, webhooktest.Payload(t, "octokit/pull_request/opened.payload.json"), fields)
}

// eventCalls leaves out the background listing of open pull requests
// (a conditional request every pollEvery, not caused by an event).
func eventCalls(calls []githubtest.Call) []githubtest.Call {
	return slices.DeleteFunc(slices.Clone(calls), func(c githubtest.Call) bool {
		return c.Method == http.MethodGet && c.Endpoint == "/repos/{owner}/{repo}/pulls"
	})
}

// irisEnv is the iris example's manifest with one environment variable,
// which makes a version of its own with the same predictions.
func irisEnv(t *testing.T, value string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "examples", "iris-sklearn", "merlin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Replace(string(data), "  protocol: v1\n", "  protocol: v1\n  env: [{name: MERLIN_TEST_NOTE, value: "+value+"}]\n", 1)
	if out == string(data) {
		t.Fatal("examples/iris-sklearn/merlin.yaml has no protocol line to add env after")
	}
	return out
}

// prFixture is a daemon serving the iris example from a real git
// repository, with a github block pointed at the fake GitHub.
type prFixture struct {
	t *testing.T
	// auth is the github block's credentials: a token unless a test sets
	// an app.
	auth     string
	gh       *githubtest.Server
	repo     *gittest.Repo
	d        *running
	stateDir string
	py       string
}

func newPRFixture(t *testing.T) *prFixture {
	t.Helper()
	return newPRFixtureAuth(t, "tokenEnv: MERLIN_TEST_GITHUB_TOKEN")
}

// newPRFixtureAuth is newPRFixture with the github block's credentials.
func newPRFixtureAuth(t *testing.T, auth string) *prFixture {
	t.Helper()
	f := &prFixture{t: t, py: requirePython(t), stateDir: t.TempDir(), auth: auth}
	t.Setenv("MERLIN_TEST_WEBHOOK_SECRET", hookSecret)
	t.Setenv("MERLIN_TEST_GITHUB_TOKEN", "ghp_merlin_test_token")
	f.gh = githubtest.New(t)
	f.gh.AddToken("ghp_merlin_test_token", "merlin-app")
	f.gh.SetPermission("acme/models", "writer", "write")
	f.gh.SetPermission("acme/models", "reader", "read")
	f.repo = gittest.NewRepo(t)
	f.repo.CommitDir("add iris", filepath.Join("..", "examples", "iris-sklearn"), "iris")
	f.start()
	poll.Until(t, 2*time.Minute, "iris serves", func() bool {
		ms := f.d.model(t, "iris-sklearn")
		return len(ms.Versions) == 1 && ms.Versions[0].Weight == 100 && ms.Versions[0].Ready()
	})
	return f
}

func (f *prFixture) start() {
	f.d = startDaemon(f.t, "pulls", fmt.Sprintf(`repositories:
  - name: models
    url: %q
    interval: 1s
    github: {repo: acme/models, %s, apiURL: %q, webhookSecretEnv: MERLIN_TEST_WEBHOOK_SECRET, commentInterval: 1s}
local: {listen: "127.0.0.1:0", stateDir: %q, python: %q}
server: {listen: "127.0.0.1:0"}
`, f.repo.Bare, f.auth, f.gh.URL, f.stateDir, f.py))
}

// open pushes a head for pull request n and registers the pull request
// with the fake GitHub; the event is sent separately.
func (f *prFixture) open(n int, headRepo string, files map[string]string) string {
	f.t.Helper()
	sha := f.repo.PullHead(n, files)
	f.gh.AddPull("acme/models", githubtest.Pull{Number: n, Title: "tune iris", Author: "writer", HeadRepo: headRepo, HeadRef: "tune", HeadSHA: sha})
	return sha
}

// push pushes a new head to pull request n, as GitHub would show it.
func (f *prFixture) push(n int, files map[string]string) string {
	f.t.Helper()
	sha := f.repo.PullHead(n, files)
	f.gh.UpdatePull("acme/models", n, func(p *githubtest.Pull) { p.HeadSHA = sha })
	return sha
}

// close closes (or merges) pull request n on the fake GitHub and sends
// the event.
func (f *prFixture) close(n int, sha, headRepo string, merged bool) {
	f.t.Helper()
	f.gh.UpdatePull("acme/models", n, func(p *githubtest.Pull) { p.State, p.Merged = "closed", merged })
	f.send("pull_request", prPayload(f.t, "closed", n, sha, headRepo, merged))
}

func (f *prFixture) send(event string, body []byte) {
	f.t.Helper()
	code, resp := sendHook(f.t, f.d.api, webhooktest.Delivery{Event: event, Body: body})
	if code != http.StatusAccepted && code != http.StatusOK {
		f.t.Fatalf("%s delivery: %d %s", event, code, resp)
	}
}

// sticky returns pull request n's comments carrying the sticky marker.
func (f *prFixture) sticky(n int) []githubtest.Comment {
	var out []githubtest.Comment
	for _, c := range f.gh.Comments("acme/models", n) {
		if pr, ok := pullrequest.ParseMarker(c.Body); ok && pr == n && strings.Contains(c.Body, pullrequest.Marker(n)) {
			out = append(out, c)
		}
	}
	return out
}

// preview returns pull request n's preview among the model's versions.
func (f *prFixture) preview(n int) (serving.VersionStatus, bool) {
	for _, v := range f.d.model(f.t, "iris-sklearn").Versions {
		if v.Role == serving.RolePreview && v.PR == n {
			return v, true
		}
	}
	return serving.VersionStatus{}, false
}

func (f *prFixture) predict(times int) {
	f.t.Helper()
	body := `{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}`
	for range times {
		resp, err := http.Post("http://"+f.d.d.ModelsAddr()+"/v1/models/iris-sklearn:predict", "application/json", strings.NewReader(body))
		if err != nil {
			f.t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			f.t.Fatalf("predict: %d", resp.StatusCode)
		}
	}
}

// TestPullRequestPreview drives a pull request from opening to closing
// through signed deliveries, real git and real model servers: its head
// is previewed as a shadow of production, the one sticky comment shows
// the agreement measured on mirrored traffic, the commit status says
// success, a burst of 50 events leaves one comment, and closing removes
// the preview.
func TestPullRequestPreview(t *testing.T) {
	f := newPRFixture(t)

	// Figures: five pull requests opened one after another, each from its
	// event to its preview serving and its comment posted.
	var took []time.Duration
	for n := 21; n <= 25; n++ {
		sha := f.open(n, "acme/models", map[string]string{"iris/merlin.yaml": irisEnv(t, fmt.Sprint("pr", n))})
		start := time.Now()
		f.send("pull_request", prPayload(t, "opened", n, sha, "acme/models", false))
		poll.Until(t, 2*time.Minute, fmt.Sprintf("#%d previewed and its comment posted", n), func() bool {
			v, ok := f.preview(n)
			return ok && v.Ready() && len(f.sticky(n)) == 1
		})
		took = append(took, time.Since(start))
		f.close(n, sha, "acme/models", false)
		poll.Until(t, time.Minute, fmt.Sprintf("#%d's preview removed", n), func() bool { _, ok := f.preview(n); return !ok })
	}
	poll.Until(t, 30*time.Second, "closed pull requests are forgotten once reported", func() bool {
		_, _, known := f.d.d.pulls["models"].known(21)
		return !known
	})
	slices.Sort(took)
	t.Logf("pull request figures: PR opened → preview serving and comment posted (local target, iris, %d pull requests): p50 %v, max %v",
		len(took), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))

	start := time.Now()
	sha := f.open(11, "acme/models", map[string]string{"iris/merlin.yaml": irisEnv(t, "pr11")})
	f.send("pull_request", prPayload(t, "opened", 11, sha, "acme/models", false))
	poll.Until(t, 2*time.Minute, "pull request 11's preview is ready", func() bool {
		v, ok := f.preview(11)
		return ok && v.Ready() && v.Weight == 0
	})
	poll.Until(t, 30*time.Second, "the sticky comment is posted", func() bool { return len(f.sticky(11)) == 1 })
	t.Logf("pull request opened → preview serving and comment posted: %v", time.Since(start).Round(time.Millisecond))

	f.predict(20)
	newData := time.Now()
	poll.Until(t, 30*time.Second, "the comment shows the agreement", func() bool {
		cs := f.sticky(11)
		return len(cs) == 1 && strings.Contains(cs[0].Body, "100.0% of 20 compared")
	})
	t.Logf("pull request figures: 20 predictions → the comment shows their agreement: %v (commentInterval 1s; bound: interval + 2s)", time.Since(newData).Round(time.Millisecond))
	if st := f.gh.LatestStatuses("acme/models", sha)["merlin/iris-sklearn"]; st.State != "success" || !strings.HasPrefix(st.Description, "previewing") {
		t.Errorf("merlin/iris-sklearn on %s = %+v, want success, previewing", sha[:8], st)
	}
	if ms := f.d.model(t, "iris-sklearn"); ms.Versions[0].Role != serving.RoleStable || ms.Versions[0].Weight != 100 {
		t.Errorf("production after the preview: %+v, want the stable version answering all", ms.Versions)
	}

	// 50 events for one pull request at once: one comment, edited.
	f.gh.ResetCalls()
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			code, resp := sendHook(t, f.d.api, webhooktest.Delivery{Event: "pull_request", Body: prPayload(t, "synchronize", 11, sha, "acme/models", false)})
			if code != http.StatusAccepted && code != http.StatusOK {
				t.Errorf("synchronize delivery: %d %s", code, resp)
			}
		})
	}
	wg.Wait()
	time.Sleep(3 * time.Second) // more than commentInterval: edits would have gone out
	if cs := f.sticky(11); len(cs) != 1 {
		t.Errorf("after 50 events, %d sticky comments, want 1", len(cs))
	}
	if calls := f.gh.CallsTo(http.MethodPost, "/repos/{owner}/{repo}/issues/{issue_number}/comments"); len(calls) != 0 {
		t.Errorf("50 events created %d comments", len(calls))
	}
	t.Logf("pull request figures: 50 concurrent events on one pull request: %d sticky comment, %d API calls, %d writes", len(f.sticky(11)), len(eventCalls(f.gh.Calls())), writes(f.gh.Calls()))

	// Closing removes the preview and says so.
	f.close(11, sha, "acme/models", false)
	poll.Until(t, time.Minute, "the preview is removed", func() bool { _, ok := f.preview(11); return !ok })
	poll.Until(t, 30*time.Second, "the comment says closed", func() bool {
		cs := f.sticky(11)
		return len(cs) == 1 && strings.Contains(cs[0].Body, "Closed without merging")
	})
	if n := len(f.sticky(11)); n != 1 {
		t.Errorf("%d sticky comments on #11, want 1", n)
	}
}

// TestForkPullRequest: a fork's head is not deployed until a writer's
// `/merlin preview`, which deploys the head of that moment; a reader's
// does nothing and writes nothing. A restart in the middle keeps the one
// comment. Merlin calls GitHub as an App installation here.
func TestForkPullRequest(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemFile := filepath.Join(t.TempDir(), "app.pem")
	if err := os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newPRFixtureAuth(t, fmt.Sprintf("app: {id: 42, installationID: 678, privateKeyFile: %q}", pemFile))
	f.gh.AddApp(42, &key.PublicKey, time.Hour)
	sha := f.open(12, "mallory/models", map[string]string{"iris/merlin.yaml": irisEnv(t, "fork")})
	f.send("pull_request", prPayload(t, "opened", 12, sha, "mallory/models", false))
	poll.Until(t, 30*time.Second, "the comment names /merlin preview", func() bool {
		cs := f.sticky(12)
		return len(cs) == 1 && strings.Contains(cs[0].Body, "/merlin preview")
	})
	if _, ok := f.preview(12); ok {
		t.Fatal("a fork's head was deployed without a writer's approval")
	}

	// A reader's approval: nothing happens, nothing is written.
	f.gh.ResetCalls()
	f.send("issue_comment", commentPayload(t, "created", 12, "reader", "User", "/merlin preview"))
	poll.Until(t, 30*time.Second, "the reader is turned down", func() bool { return strings.Contains(f.d.logs.String(), "login=reader") })
	time.Sleep(2 * time.Second)
	if w := writes(f.gh.Calls()); w != 0 {
		t.Errorf("a reader's /merlin preview: %d writes, want 0", w)
	}
	if _, ok := f.preview(12); ok {
		t.Fatal("a reader's /merlin preview deployed the fork")
	}

	// Restart before the approval: the same comment is edited afterwards.
	f.d.stop()
	if err := <-f.d.done; err != nil {
		t.Fatal(err)
	}
	f.d.done <- nil // for the first daemon's cleanup
	f.start()

	f.send("issue_comment", commentPayload(t, "created", 12, "writer", "User", "/merlin preview"))
	poll.Until(t, 2*time.Minute, "the approved fork head is previewed", func() bool {
		v, ok := f.preview(12)
		return ok && v.Ready()
	})
	poll.Until(t, 30*time.Second, "the comment follows the preview", func() bool {
		cs := f.sticky(12)
		return len(cs) == 1 && !strings.Contains(cs[0].Body, "comes from a fork")
	})
	if n := len(f.sticky(12)); n != 1 {
		t.Errorf("%d sticky comments on #12 after a restart, want 1", n)
	}

	// A push after the approval needs another one: the preview goes.
	sha2 := f.push(12, map[string]string{"iris/merlin.yaml": irisEnv(t, "fork2")})
	f.send("pull_request", prPayload(t, "synchronize", 12, sha2, "mallory/models", false))
	poll.Until(t, time.Minute, "the unapproved head is not previewed", func() bool { _, ok := f.preview(12); return !ok })
}

// TestPullRequestBudgetFaultsMerge: a push to a previewed pull request
// costs at most 3 API calls and 2 writes; under rate-limit and 502 faults
// no event is lost (the comment converges once they clear); a merged pull
// request's comment follows the production rollout to its end; and no
// secret appears in anything the daemon wrote.
func TestPullRequestBudgetFaultsMerge(t *testing.T) {
	f := newPRFixture(t)
	sha := f.open(31, "acme/models", map[string]string{"iris/merlin.yaml": irisEnv(t, "v1")})
	f.send("pull_request", prPayload(t, "opened", 31, sha, "acme/models", false))
	reported := func(sha string) func() bool {
		return func() bool {
			cs := f.sticky(31)
			return len(cs) == 1 && strings.Contains(cs[0].Body, sha[:7]) &&
				f.gh.LatestStatuses("acme/models", sha)["merlin/iris-sklearn"].State == "success"
		}
	}
	poll.Until(t, 2*time.Minute, "#31 previewed and reported", reported(sha))

	// Steady state: a push is one edit and one status.
	sha2 := f.push(31, map[string]string{"iris/merlin.yaml": irisEnv(t, "v2")})
	time.Sleep(1100 * time.Millisecond) // past commentInterval since the last edit
	f.gh.ResetCalls()
	f.send("pull_request", prPayload(t, "synchronize", 31, sha2, "acme/models", false))
	poll.Until(t, 2*time.Minute, "the new head previewed and reported", reported(sha2))
	time.Sleep(2 * time.Second) // anything more would have gone out by now
	calls := eventCalls(f.gh.Calls())
	t.Logf("pull request figures: a push to a previewed pull request: %d API calls, %d writes", len(calls), writes(calls))
	if len(calls) > 3 || writes(calls) > 2 {
		t.Errorf("a push: %d calls, %d writes; want ≤ 3 and ≤ 2: %+v", len(calls), writes(calls), calls)
	}
	if v, ok := f.preview(31); !ok || !strings.Contains(f.sticky(31)[0].Body, v.Version) {
		t.Errorf("the comment does not name the new head's preview %+v", v)
	}

	// Faults: rate limited, then bad gateways; the next head still lands.
	sha3 := f.push(31, map[string]string{"iris/merlin.yaml": irisEnv(t, "v3")})
	f.gh.Fail(1, githubtest.RateLimited(f.gh.Now().Add(2*time.Second)))
	f.gh.Fail(4, githubtest.BadGateway())
	f.send("pull_request", prPayload(t, "synchronize", 31, sha3, "acme/models", false))
	poll.Until(t, 2*time.Minute, "the comment converges after the faults", reported(sha3))
	if n := len(f.sticky(31)); n != 1 {
		t.Errorf("%d sticky comments after faults, want 1", n)
	}

	// Merge: production rolls the pull request's version out, and the
	// comment follows it to the end.
	f.repo.Git("merge", "--quiet", "--ff-only", "pull-31")
	f.repo.Push()
	f.close(31, sha3, "acme/models", true)
	poll.Until(t, 2*time.Minute, "the merged comment says the rollout is over", func() bool {
		cs := f.sticky(31)
		return len(cs) == 1 && strings.Contains(cs[0].Body, "Merged: the production rollout is over")
	})
	if st := f.gh.LatestStatuses("acme/models", sha3)["merlin/iris-sklearn"]; st.State != "success" || !strings.HasPrefix(st.Description, "rolled out") {
		t.Errorf("merlin/iris-sklearn after the merge = %+v, want success, rolled out", st)
	}
	if _, ok := f.preview(31); ok {
		t.Error("the merged pull request's preview is still mirrored")
	}

	// No secret in anything the daemon wrote: logs, API, comments, statuses.
	var written strings.Builder
	written.WriteString(f.d.logs.String())
	for _, path := range []string{"/api/v1/models", "/api/v1/repos", "/metrics", "/"} {
		resp, err := http.Get(f.d.api + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		written.Write(b)
	}
	for _, c := range f.gh.Comments("acme/models", 31) {
		written.WriteString(c.Body)
	}
	for _, sha := range []string{sha, sha2, sha3} {
		for _, st := range f.gh.Statuses("acme/models", sha) {
			written.WriteString(st.Description + st.TargetURL)
		}
	}
	for _, secret := range []string{"ghp_merlin_test_token", hookSecret} {
		if strings.Contains(written.String(), secret) {
			t.Errorf("a secret (%.6s…) appears in what the daemon wrote", secret)
		}
	}
}

// TestPullRequestBrokenManifest: a pull request whose merlin.yaml is
// broken runs nothing; its comment and its failure status name the file,
// line and column, and production is untouched.
func TestPullRequestBrokenManifest(t *testing.T) {
	f := newPRFixture(t)
	before := f.d.model(t, "iris-sklearn")
	broken := strings.Replace(irisEnv(t, "broken"), "  protocol: v1\n", "  protocol: v9\n", 1)
	sha := f.open(41, "acme/models", map[string]string{"iris/merlin.yaml": broken})
	f.send("pull_request", prPayload(t, "opened", 41, sha, "acme/models", false))
	poll.Until(t, time.Minute, "a failure status", func() bool {
		return f.gh.LatestStatuses("acme/models", sha)["merlin/iris-sklearn"].State == "failure"
	})
	st := f.gh.LatestStatuses("acme/models", sha)["merlin/iris-sklearn"]
	cs := f.sticky(41)
	if len(cs) != 1 || !strings.Contains(html.UnescapeString(cs[0].Body), "iris/merlin.yaml:12:") || !strings.Contains(st.Description, "iris/merlin.yaml:12:") {
		t.Errorf("comment %+v and status %+v: want both to name iris/merlin.yaml:line:col", cs, st)
	}
	t.Logf("status: %s", st.Description)
	if _, ok := f.preview(41); ok {
		t.Error("a broken pull request was previewed")
	}
	after := f.d.model(t, "iris-sklearn")
	if after.Desired != before.Desired || after.LastError != "" || len(after.Versions) != 1 {
		t.Errorf("production changed: %+v → %+v", before, after)
	}
}

// TestPullRequestSeenByPolling: a pull request whose webhooks never came
// is previewed all the same, and its closing is noticed, by listing the
// open pull requests every pollEvery.
func TestPullRequestSeenByPolling(t *testing.T) {
	f := newPRFixture(t)
	sha := f.open(51, "acme/models", map[string]string{"iris/merlin.yaml": irisEnv(t, "polled")})
	poll.Until(t, time.Minute, "#51 previewed without a webhook", func() bool {
		v, ok := f.preview(51)
		return ok && v.Ready() && len(f.sticky(51)) == 1 &&
			f.gh.LatestStatuses("acme/models", sha)["merlin/iris-sklearn"].State == "success"
	})
	f.gh.UpdatePull("acme/models", 51, func(p *githubtest.Pull) { p.State = "closed" })
	poll.Until(t, time.Minute, "#51's closing noticed without a webhook", func() bool {
		_, ok := f.preview(51)
		cs := f.sticky(51)
		return !ok && len(cs) == 1 && strings.Contains(cs[0].Body, "Closed without merging")
	})
	if n := len(f.gh.CallsTo(http.MethodGet, "/repos/{owner}/{repo}/pulls")); n < 2 {
		t.Errorf("the open pull requests were listed %d times", n)
	}
}

// TestForgedPullRequestEvents: pull_request deliveries that are unsigned,
// signed with SHA-1 only, or signed with another secret are refused and
// change nothing: no API call, no preview.
func TestForgedPullRequestEvents(t *testing.T) {
	f := newPRFixture(t)
	// Only in git: GitHub's list of open pull requests would (rightly) show it.
	sha := f.repo.PullHead(61, map[string]string{"iris/merlin.yaml": irisEnv(t, "forged")})
	body := prPayload(t, "opened", 61, sha, "acme/models", false)
	f.gh.ResetCalls()
	for _, d := range []webhooktest.Delivery{
		{Event: "pull_request", Body: body, Signature: "-"},
		{Event: "pull_request", Body: body, Signature: "-", SHA1: "sha1=" + strings.Repeat("a", 40)},
		{Event: "pull_request", Body: body, Signature: "sha256=" + strings.Repeat("0", 64)},
	} {
		if code, resp := sendHook(t, f.d.api, d); code != http.StatusUnauthorized {
			t.Errorf("forged delivery: %d %s, want 401", code, resp)
		}
	}
	time.Sleep(2 * time.Second)
	if calls := eventCalls(f.gh.Calls()); len(calls) != 0 {
		t.Errorf("forged deliveries made %d API calls: %+v", len(calls), calls)
	}
	if _, ok := f.preview(61); ok {
		t.Error("a forged delivery deployed a preview")
	}
}
