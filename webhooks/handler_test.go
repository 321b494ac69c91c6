package webhooks_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // GitHub's legacy signature, which must be refused
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/internal/webhooktest"
	"merlin.dev/merlin/webhooks"
)

var secret = []byte("It's a Secret to Everybody")

// The corpus's payloads are for Codertocat/Hello-World, branch master.
const fullName = "Codertocat/Hello-World"

// recorder is a Sink that keeps what it receives.
type recorder struct {
	mu     sync.Mutex
	events []webhooks.Event
	at     []time.Time
}

func (r *recorder) add(ev webhooks.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	r.at = append(r.at, time.Now())
}
func (r *recorder) Push(_ context.Context, ev webhooks.Push)               { r.add(ev) }
func (r *recorder) PullRequest(_ context.Context, ev webhooks.PullRequest) { r.add(ev) }
func (r *recorder) Comment(_ context.Context, ev webhooks.Comment)         { r.add(ev) }

func (r *recorder) list() []webhooks.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]webhooks.Event(nil), r.events...)
}

type hook struct {
	url   string
	path  string
	store *webhooks.Deliveries
	h     *webhooks.Handler
	rec   *recorder
}

// startHook serves a Handler (its store in dir) and runs it into a
// recorder; queue 0 is the default.
func startHook(t testing.TB, dir string, opts webhooks.Options) *hook {
	t.Helper()
	path := filepath.Join(dir, "deliveries")
	store, err := webhooks.OpenDeliveries(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Repos == nil {
		opts.Repos = []webhooks.Repo{{Name: "models", FullName: fullName, Branch: "master", Secret: secret}}
	}
	opts.Deliveries = store
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := webhooks.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx, rec) }()
	t.Cleanup(func() { cancel(); <-done })
	return &hook{url: srv.URL + webhooks.Path, path: path, store: store, h: h, rec: rec}
}

// send delivers d and returns the status and the JSON answer.
func (k *hook) send(t *testing.T, d webhooktest.Delivery) (int, map[string]string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(d.Request(t, k.url, secret))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("answer %d is not JSON: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

// pushToMaster is the corpus's push to master. The corpus's push
// payloads predate the repository's has_discussions (sent since 2022,
// required by the current schema), so it is added.
func pushToMaster(t testing.TB) []byte {
	return webhooktest.Edit(t, webhooktest.Payload(t, "octokit/push/with-new-branch.payload.json"),
		map[string]any{"repository.has_discussions": false})
}

// prComment is the corpus's issue comment moved onto a pull request.
func prComment(t *testing.T, action string) []byte {
	fields := map[string]any{
		"action": action,
		"issue.pull_request": map[string]any{
			"url":       "https://api.github.com/repos/Codertocat/Hello-World/pulls/1",
			"html_url":  "https://github.com/Codertocat/Hello-World/pull/1",
			"diff_url":  "https://github.com/Codertocat/Hello-World/pull/1.diff",
			"patch_url": "https://github.com/Codertocat/Hello-World/pull/1.patch",
		},
	}
	if action == "edited" {
		fields["changes"] = map[string]any{"body": map[string]any{"from": "/merlin promote"}}
	}
	return webhooktest.Edit(t, webhooktest.Payload(t, "octokit/issue_comment/created.payload.json"), fields)
}

func sha1Header(body []byte) string {
	m := hmac.New(sha1.New, secret)
	m.Write(body)
	return "sha1=" + hex.EncodeToString(m.Sum(nil))
}

// TestSignature: every delivery that is not signed with the secret by
// X-Hub-Signature-256 is refused with 401, and nothing happens: no event,
// no delivery remembered (so the genuine one still acts).
func TestSignature(t *testing.T) {
	k := startHook(t, t.TempDir(), webhooks.Options{})
	body := pushToMaster(t)
	other := webhooks.SignatureHeader([]byte("another secret"), body)
	forged := webhooktest.Edit(t, body, map[string]any{"after": "0000000000000000000000000000000000000001"})
	id := webhooktest.NewID()
	for name, d := range map[string]webhooktest.Delivery{
		"unsigned":        {Signature: "-"},
		"SHA-1 only":      {Signature: "-", SHA1: sha1Header(body)},
		"SHA-1 as 256":    {Signature: strings.Replace(sha1Header(body), "sha1=", "sha256=", 1)},
		"malformed":       {Signature: "sha256=zz" + strings.Repeat("0", 62)},
		"no prefix":       {Signature: strings.TrimPrefix(webhooks.SignatureHeader(secret, body), "sha256=")},
		"wrong secret":    {Signature: other},
		"empty secret":    {Signature: webhooks.SignatureHeader(nil, body)},
		"another body's":  {Signature: webhooks.SignatureHeader(secret, forged)},
		"upper-case algo": {Signature: strings.Replace(webhooks.SignatureHeader(secret, body), "sha256=", "SHA256=", 1)},
	} {
		d.Event, d.Body, d.ID = "push", body, id
		code, out := k.send(t, d)
		if code != http.StatusUnauthorized || out["error"] == "" {
			t.Errorf("%s: %d %v, want 401 with an error", name, code, out)
		}
		if strings.Contains(out["error"], string(secret)) {
			t.Errorf("%s: the answer names the secret", name)
		}
	}
	if n := k.store.Len(); n != 0 {
		t.Errorf("%d deliveries remembered after refusals, want 0", n)
	}
	// The genuine delivery, with the id the forgeries used, acts.
	if code, out := k.send(t, webhooktest.Delivery{Event: "push", Body: body, ID: id}); code != http.StatusAccepted {
		t.Fatalf("signed push: %d %v", code, out)
	}
	poll.Until(t, 5*time.Second, "the signed push is delivered", func() bool { return len(k.rec.list()) == 1 })
	time.Sleep(50 * time.Millisecond)
	if evs := k.rec.list(); len(evs) != 1 {
		t.Fatalf("%d events, want only the signed push's", len(evs))
	}
}

// TestDuplicateDelivery: a repeated X-GitHub-Delivery acts once, also
// after a restart (a new handler on the same store).
func TestDuplicateDelivery(t *testing.T) {
	dir := t.TempDir()
	k := startHook(t, dir, webhooks.Options{})
	d := webhooktest.Delivery{Event: "push", Body: pushToMaster(t), ID: webhooktest.NewID()}
	if code, out := k.send(t, d); code != http.StatusAccepted {
		t.Fatalf("first delivery: %d %v", code, out)
	}
	if code, out := k.send(t, d); code != http.StatusOK || !strings.Contains(out["status"], "duplicate") {
		t.Fatalf("redelivery: %d %v, want 200 duplicate", code, out)
	}
	poll.Until(t, 5*time.Second, "the push is delivered", func() bool { return len(k.rec.list()) == 1 })

	restarted := startHook(t, dir, webhooks.Options{})
	if code, out := restarted.send(t, d); code != http.StatusOK || !strings.Contains(out["status"], "duplicate") {
		t.Fatalf("redelivery after a restart: %d %v, want 200 duplicate", code, out)
	}
	other := d
	other.ID = webhooktest.NewID()
	if code, out := restarted.send(t, other); code != http.StatusAccepted {
		t.Fatalf("a new delivery after a restart: %d %v", code, out)
	}
	poll.Until(t, 5*time.Second, "the new delivery is delivered", func() bool { return len(restarted.rec.list()) == 1 })
	time.Sleep(50 * time.Millisecond)
	if n := len(k.rec.list()) + len(restarted.rec.list()); n != 2 {
		t.Fatalf("%d events for 2 distinct deliveries", n)
	}
}

// TestDeliveriesBounded: the store keeps the last N ids, in memory and
// on disk, across reopenings.
func TestDeliveriesBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "deliveries")
	s, err := webhooks.OpenDeliveries(path, 10)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 35 {
		id := webhooktest.NewID()
		ids = append(ids, id)
		if fresh, err := s.Add(id); !fresh || err != nil {
			t.Fatalf("Add(%s) = %v, %v", id, fresh, err)
		}
	}
	if fresh, _ := s.Add(ids[34]); fresh {
		t.Fatal("the last id is not remembered")
	}
	lines := strings.Count(string(readFile(t, path)), "\n")
	if lines >= 20 {
		t.Errorf("the store's file holds %d lines for 10 ids, want fewer than 20", lines)
	}
	s, err = webhooks.OpenDeliveries(path, 10)
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 10 {
		t.Errorf("reopened store remembers %d ids, want 10", s.Len())
	}
	if fresh, _ := s.Add(ids[30]); fresh {
		t.Error("a recent id is forgotten after reopening")
	}
	if fresh, _ := s.Add(ids[0]); !fresh {
		t.Error("the oldest id is still remembered beyond the bound")
	}
	if _, err := s.Add("../../etc\npasswd"); err == nil {
		t.Error("an id that is not a GUID is accepted")
	}
}

// TestEvents: what is queued and what is ignored, for the corpus's
// payloads and ones derived from them.
func TestEvents(t *testing.T) {
	k := startHook(t, t.TempDir(), webhooks.Options{})
	pr := func(name string) []byte { return webhooktest.Payload(t, "octokit/pull_request/"+name) }
	opened := pr("opened.payload.json")
	for _, c := range []struct {
		name, event string
		body        []byte
		queued      bool
	}{
		{"push to the production branch", "push", pushToMaster(t), true},
		{"tag deletion", "push", webhooktest.Edit(t, webhooktest.Payload(t, "octokit/push/payload.json"), map[string]any{"repository.has_discussions": false}), false},
		{"push to another branch", "push", webhooktest.Edit(t, pushToMaster(t), map[string]any{"ref": "refs/heads/feature"}), false},
		{"push to an unwatched repository", "push", webhooktest.Edit(t, pushToMaster(t), map[string]any{"repository.full_name": "someone/else"}), false},
		{"pull request opened", "pull_request", opened, true},
		{"pull request synchronize", "pull_request", webhooktest.Edit(t, pr("synchronize.payload.json"), map[string]any{"pull_request.base.repo.has_discussions": false, "pull_request.head.repo.has_discussions": false}), true},
		{"pull request closed", "pull_request", pr("closed.payload.json"), true},
		{"pull request reopened", "pull_request", webhooktest.Edit(t, opened, map[string]any{"action": "reopened"}), true},
		{"pull request edited: title", "pull_request", webhooktest.Edit(t, opened, map[string]any{"action": "edited", "changes": map[string]any{"title": map[string]any{"from": "old"}}}), false},
		{"pull request edited: base", "pull_request", webhooktest.Edit(t, opened, map[string]any{"action": "edited", "changes": map[string]any{"base": map[string]any{"ref": map[string]any{"from": "develop"}, "sha": map[string]any{"from": "ec26c3e57ca3a959ca5aad62de7213c562f8c821"}}}}), true},
		{"pull request labeled", "pull_request", webhooktest.Edit(t, opened, map[string]any{"action": "labeled", "label": map[string]any{"id": 1, "node_id": "x", "url": "https://api.github.com/l", "name": "bug", "description": nil, "color": "f00", "default": true}, "pull_request.base.repo.has_discussions": false, "pull_request.head.repo.has_discussions": false}), false},
		{"comment on a pull request", "issue_comment", prComment(t, "created"), true},
		{"comment on an issue", "issue_comment", webhooktest.Payload(t, "octokit/issue_comment/created.payload.json"), false},
		{"comment edited", "issue_comment", prComment(t, "edited"), false},
		{"comment deleted", "issue_comment", prComment(t, "deleted"), false},
	} {
		before := len(k.rec.list())
		code, out := k.send(t, webhooktest.Delivery{Event: c.event, Body: c.body})
		switch {
		case c.queued && code != http.StatusAccepted:
			t.Errorf("%s: %d %v, want 202", c.name, code, out)
		case !c.queued && (code != http.StatusOK || out["ignored"] == ""):
			t.Errorf("%s: %d %v, want 200 ignored", c.name, code, out)
		}
		if c.queued {
			poll.Until(t, 5*time.Second, c.name+" is delivered", func() bool { return len(k.rec.list()) == before+1 })
		}
	}
	time.Sleep(50 * time.Millisecond)
	evs := k.rec.list()
	if len(evs) != 7 {
		t.Fatalf("%d events, want 7", len(evs))
	}
	if p, ok := evs[0].(webhooks.Push); !ok || p.Repo != "models" || p.After != "6113728f27ae82c7b1a177c8d03f9e96e0adf246" {
		t.Errorf("push event: %+v", evs[0])
	}
	if c, ok := evs[6].(webhooks.Comment); !ok || c.Number != 1 || c.Event.GetComment().GetBody() == "" {
		t.Errorf("comment event: %+v", evs[6])
	}
	// Other events and the ping are answered, nothing else.
	for _, ev := range []string{"ping", "star"} {
		body := webhooktest.Payload(t, "octokit/ping/payload.json")
		req := webhooktest.Delivery{Body: body}.Request(t, k.url, secret) // "star": no schema
		if ev == "ping" {
			webhooktest.Validate(t, "ping", body)
		}
		req.Header.Set("X-GitHub-Event", ev)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d, want 200", ev, resp.StatusCode)
		}
	}
	if n := len(k.rec.list()); n != 7 {
		t.Errorf("ping or star made events: %d", n)
	}
}

// TestBodyLimit: a body over the limit is refused with 413 before it is
// verified, with and without a stated length.
func TestBodyLimit(t *testing.T) {
	k := startHook(t, t.TempDir(), webhooks.Options{MaxBodyBytes: 4096})
	body := pushToMaster(t)
	if len(body) <= 4096 {
		t.Fatalf("the push payload is %d bytes; the test needs one over 4096", len(body))
	}
	for _, chunked := range []bool{false, true} {
		req := webhooktest.Delivery{Event: "push", Body: body}.Request(t, k.url, secret)
		if chunked {
			req.ContentLength = -1
			req.Body = io.NopCloser(strings.NewReader(string(body)))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("chunked=%v: %d, want 413", chunked, resp.StatusCode)
		}
	}
	if n := k.store.Len(); n != 0 {
		t.Errorf("%d deliveries remembered", n)
	}

	// The default is GitHub's cap, 25 MB: a larger stated length is
	// refused before a byte is read.
	def := startHook(t, t.TempDir(), webhooks.Options{})
	req := webhooktest.Delivery{Event: "push", Body: body}.Request(t, def.url, secret)
	req.ContentLength = webhooks.MaxBodyBytes + 1
	req.Body = io.NopCloser(io.LimitReader(zeros{}, req.ContentLength))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("25 MB + 1 byte: %d, want 413", resp.StatusCode)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestQueueFull: when the queue is full the handler answers 503 with
// Retry-After at once, and GitHub's redelivery of the same id is accepted
// later.
func TestQueueFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "deliveries")
	store, err := webhooks.OpenDeliveries(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	h, err := webhooks.New(webhooks.Options{
		Repos:      []webhooks.Repo{{Name: "models", FullName: fullName, Branch: "master", Secret: secret}},
		Deliveries: store, Queue: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	send := func(d webhooktest.Delivery) (int, http.Header) {
		resp, err := http.DefaultClient.Do(d.Request(t, srv.URL+webhooks.Path, secret))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	}
	first := webhooktest.Delivery{Event: "push", Body: pushToMaster(t)}
	second := webhooktest.Delivery{Event: "push", Body: pushToMaster(t), ID: webhooktest.NewID()}
	if code, _ := send(first); code != http.StatusAccepted {
		t.Fatalf("first: %d", code)
	}
	code, hdr := send(second)
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Fatalf("second, queue full: %d Retry-After %q, want 503 with Retry-After", code, hdr.Get("Retry-After"))
	}
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.Run(ctx, rec)
	poll.Until(t, 5*time.Second, "the queue drains", func() bool { return len(rec.list()) == 1 })
	if code, _ := send(second); code != http.StatusAccepted {
		t.Fatalf("redelivery of the refused one: %d, want 202", code)
	}
	poll.Until(t, 5*time.Second, "the redelivery is delivered", func() bool { return len(rec.list()) == 2 })
}

// TestConcurrentRedeliveries: the same delivery arriving many times at
// once is queued once.
func TestConcurrentRedeliveries(t *testing.T) {
	k := startHook(t, t.TempDir(), webhooks.Options{})
	d := webhooktest.Delivery{Event: "push", Body: pushToMaster(t), ID: webhooktest.NewID()}
	reqs := make([]*http.Request, 20)
	for i := range reqs {
		reqs[i] = d.Request(t, k.url, secret)
	}
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for _, req := range reqs {
		wg.Go(func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[http.StatusAccepted] != 1 || codes[http.StatusOK] != len(reqs)-1 {
		t.Fatalf("answers %v, want one 202 and the rest 200", codes)
	}
	poll.Until(t, 5*time.Second, "the delivery is handed over", func() bool { return len(k.rec.list()) == 1 })
	time.Sleep(50 * time.Millisecond)
	if n := len(k.rec.list()); n != 1 {
		t.Fatalf("%d events for one delivery", n)
	}
}
