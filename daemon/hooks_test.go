package daemon

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"merlin.dev/merlin/internal/gittest"
	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/internal/webhooktest"
)

const hookSecret = "webhook secret for the tests"

// pushPayload is the corpus's push, made a push of sha to main of
// acme/models (and given the has_discussions GitHub sends since 2022).
func pushPayload(t *testing.T, sha string) []byte {
	return webhooktest.Edit(t, webhooktest.Payload(t, "octokit/push/with-new-branch.payload.json"), map[string]any{
		"ref": "refs/heads/" + gittest.Branch, "after": sha, "head_commit.id": sha,
		"repository.full_name": "acme/models", "repository.has_discussions": false,
	})
}

// sendHook delivers a signed event and returns the status and body.
func sendHook(t *testing.T, url string, d webhooktest.Delivery) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(d.Request(t, url+"/hooks/github", []byte(hookSecret)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// TestPushWebhook: with a poll interval of an hour, a signed push webhook
// makes the daemon fetch and reconcile the new commit at once; a forged
// one does nothing. It logs the acknowledgement latency and the time from
// the webhook to the fetch's first request to the git server.
func TestPushWebhook(t *testing.T) {
	t.Setenv("MERLIN_TEST_WEBHOOK_SECRET", hookSecret)
	repo := gittest.NewRepo(t)
	first := repo.Commit("start", map[string]string{"README.md": "models\n"})
	url, _ := gittest.StartHTTP(t, repo, false, "")
	var mu sync.Mutex
	var fetches []time.Time
	repo.OnHTTP(func(r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/info/refs") {
			mu.Lock()
			fetches = append(fetches, time.Now())
			mu.Unlock()
		}
	})
	d := startDaemon(t, "hooks", fmt.Sprintf(`repositories:
  - name: models
    url: %q
    interval: 1h
    github: {repo: acme/models, webhookSecretEnv: MERLIN_TEST_WEBHOOK_SECRET}
local: {listen: "127.0.0.1:0", stateDir: %q}
server: {listen: "127.0.0.1:0"}
`, url, t.TempDir()))
	poll.Until(t, time.Minute, "the first commit is reconciled", func() bool { return d.repoView(t).SHA == first })

	// A forged push is refused and fetches nothing.
	sha := repo.Commit("forged", map[string]string{"README.md": "forged\n"})
	mu.Lock()
	before := len(fetches)
	mu.Unlock()
	if code, body := sendHook(t, d.api, webhooktest.Delivery{Event: "push", Body: pushPayload(t, sha), Signature: "sha256=" + strings.Repeat("0", 64)}); code != http.StatusUnauthorized {
		t.Fatalf("forged push: %d %s, want 401", code, body)
	}
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	if len(fetches) != before {
		t.Errorf("a forged push made the daemon fetch")
	}
	mu.Unlock()
	if got := d.repoView(t).SHA; got != first {
		t.Fatalf("after a forged push the daemon serves %s", got)
	}

	const rounds = 20
	var acks, toFetch, toServe []time.Duration
	for i := range rounds {
		if i > 0 {
			sha = repo.Commit(fmt.Sprintf("change %d", i), map[string]string{"README.md": fmt.Sprintf("models %d\n", i)})
		}
		mu.Lock()
		before = len(fetches)
		mu.Unlock()
		delivery := webhooktest.Delivery{Event: "push", Body: pushPayload(t, sha), ID: webhooktest.NewID()}
		req := delivery.Request(t, d.api+"/hooks/github", []byte(hookSecret))
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, time.Since(start))
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("push webhook: %d, want 202", resp.StatusCode)
		}
		poll.Until(t, 30*time.Second, "the pushed commit is reconciled without waiting for the poll", func() bool { return d.repoView(t).SHA == sha })
		toServe = append(toServe, time.Since(start))
		mu.Lock()
		if len(fetches) > before {
			toFetch = append(toFetch, fetches[before].Sub(start))
		}
		mu.Unlock()
		if i == 0 {
			// GitHub's redelivery of the same delivery acts once.
			if code, body := sendHook(t, d.api, delivery); code != http.StatusOK || !strings.Contains(body, "duplicate") {
				t.Errorf("redelivery: %d %s, want 200 duplicate", code, body)
			}
		}
	}
	t.Logf("push webhook figures over %d pushes: acknowledgement p50 %v p99 %v (goal p99 ≤ 100ms); "+
		"webhook → fetch started p50 %v p99 %v (goal p50 ≤ 50ms); webhook → commit reconciled p50 %v",
		rounds, percentile(acks, 0.5), percentile(acks, 0.99), percentile(toFetch, 0.5), percentile(toFetch, 0.99), percentile(toServe, 0.5))
	if len(toFetch) != rounds {
		t.Errorf("%d of %d pushes were fetched over HTTP", len(toFetch), rounds)
	}
}

// TestWebhookSecretRequired: a github block without a secret is a
// positioned config error, and one whose variable is empty stops the start.
func TestWebhookSecretRequired(t *testing.T) {
	_, err := ParseConfig("c.yaml", []byte(`repositories:
  - name: models
    url: /srv/models.git
    github:
      repo: acme/models
`))
	if err == nil || !strings.Contains(err.Error(), "c.yaml:4") || !strings.Contains(err.Error(), "webhookSecretEnv") {
		t.Errorf("github without webhookSecretEnv: %v, want a positioned error", err)
	}
	t.Setenv("MERLIN_TEST_EMPTY_SECRET", "")
	err = newDaemonErr(t, fmt.Sprintf(`repositories:
  - name: models
    url: /srv/models.git
    github: {repo: acme/models, webhookSecretEnv: MERLIN_TEST_EMPTY_SECRET}
local: {listen: "127.0.0.1:0", stateDir: %q}
server: {listen: "127.0.0.1:0"}
`, t.TempDir()))
	if err == nil || !strings.Contains(err.Error(), "MERLIN_TEST_EMPTY_SECRET") {
		t.Errorf("empty secret: %v, want a refusal naming the variable", err)
	}
}

// TestWebhookAuthBySignature: on merlin up's combined address, with an API
// token set, a signed delivery needs no bearer token and passes despite a
// foreign Origin; an unsigned one is refused by the signature check; the
// answers keep the security headers; rollout commands still need the token.
func TestWebhookAuthBySignature(t *testing.T) {
	t.Setenv("MERLIN_TEST_WEBHOOK_SECRET", hookSecret)
	t.Setenv("MERLIN_TEST_TOKEN", "abc123")
	repo := gittest.NewRepo(t)
	repo.Commit("start", map[string]string{"README.md": "models\n"})
	d := startDaemonWith(t, "up", fmt.Sprintf(`repositories:
  - name: models
    url: %q
    github: {repo: acme/models, webhookSecretEnv: MERLIN_TEST_WEBHOOK_SECRET}
local: {stateDir: %q}
server: {tokenEnv: MERLIN_TEST_TOKEN}
`, repo.Bare, t.TempDir()), Options{CombinedListen: "127.0.0.1:0"})
	ping := webhooktest.Payload(t, "octokit/ping/payload.json")
	for _, c := range []struct {
		name   string
		d      webhooktest.Delivery
		origin string
		want   int
	}{
		{"signed ping", webhooktest.Delivery{Event: "ping", Body: ping}, "", http.StatusOK},
		{"signed ping, foreign Origin", webhooktest.Delivery{Event: "ping", Body: ping}, "https://evil.example", http.StatusOK},
		{"unsigned ping", webhooktest.Delivery{Event: "ping", Body: ping, Signature: "-"}, "", http.StatusUnauthorized},
	} {
		req := c.d.Request(t, d.api+"/hooks/github", []byte(hookSecret))
		if c.origin != "" {
			req.Header.Set("Origin", c.origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, resp.StatusCode, body, c.want)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("%s: security headers missing: %v", c.name, resp.Header)
		}
		if strings.Contains(string(body), hookSecret) {
			t.Errorf("%s: the answer holds the secret", c.name)
		}
	}
	if code, body := post(t, d.api+"/api/v1/models/iris/promote", nil); code != http.StatusUnauthorized {
		t.Errorf("a command without the token: %d %s, want 401", code, body)
	}
	if strings.Contains(d.logs.String(), hookSecret) {
		t.Error("the daemon logged the webhook secret")
	}
}

// TestPushWebhookServes: with a poll interval of an hour, a push webhook
// makes a new version of a real model (iris, direct rollout) serve.
func TestPushWebhookServes(t *testing.T) {
	py := requirePython(t)
	t.Setenv("MERLIN_TEST_WEBHOOK_SECRET", hookSecret)
	repo := gittest.NewRepo(t)
	repo.CommitDir("add iris", filepath.Join("..", "examples", "iris-sklearn"), "iris")
	d := startDaemon(t, "serves", fmt.Sprintf(`repositories:
  - name: models
    url: %q
    interval: 1h
    github: {repo: acme/models, webhookSecretEnv: MERLIN_TEST_WEBHOOK_SECRET}
local: {listen: "127.0.0.1:0", stateDir: %q, python: %q}
server: {listen: "127.0.0.1:0"}
`, repo.Bare, t.TempDir(), py))
	serving := func() string {
		for _, v := range d.model(t, "iris-sklearn").Versions {
			if v.Weight == 100 && v.Ready() {
				return v.Version
			}
		}
		return ""
	}
	poll.Until(t, 2*time.Minute, "the first version serves", func() bool { return serving() != "" })
	first := serving()

	manifest, err := os.ReadFile(filepath.Join("..", "examples", "iris-sklearn", "merlin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(manifest), "  protocol: v1\n", "  protocol: v1\n  env: [{name: LOG_LEVEL, value: debug}]\n", 1)
	sha := repo.Commit("debug logs", map[string]string{"iris/merlin.yaml": changed})
	start := time.Now()
	if code, body := sendHook(t, d.api, webhooktest.Delivery{Event: "push", Body: pushPayload(t, sha)}); code != http.StatusAccepted {
		t.Fatalf("push webhook: %d %s", code, body)
	}
	poll.Until(t, 2*time.Minute, "the new version serves without waiting for the poll", func() bool {
		v := serving()
		return v != "" && v != first
	})
	t.Logf("push webhook → new iris version serving: %v", time.Since(start))
}
