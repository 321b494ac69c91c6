package githubtest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// answer is a raw response, read and closed.
type answer struct {
	StatusCode int
	Header     http.Header
}

// get sends a raw request the way a careless client would.
func get(t *testing.T, s *Server, path, token string, header ...string) (answer, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "token "+token)
	}
	for i := 0; i < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{StatusCode: resp.StatusCode, Header: resp.Header}, b
}

func TestPaginationLinks(t *testing.T) {
	s := New(t)
	s.AddToken("tok-12345678", "bot")
	s.AddPull("acme/models", Pull{Number: 1, HeadSHA: "abc"})
	for range 5 {
		s.AddComment("acme/models", 1, "alice", "hi")
	}
	resp, body := get(t, s, "/repos/acme/models/issues/1/comments?per_page=2&page=2", "tok-12345678")
	var items []map[string]any
	if err := json.Unmarshal(body, &items); err != nil || resp.StatusCode != 200 || len(items) != 2 {
		t.Fatalf("page 2: %d, %d items, %v", resp.StatusCode, len(items), err)
	}
	link := resp.Header.Get("Link")
	for _, want := range []string{`page=3&per_page=2>; rel="next"`, `page=3&per_page=2>; rel="last"`, `page=1&per_page=2>; rel="first"`, `page=1&per_page=2>; rel="prev"`} {
		if !strings.Contains(link, want) {
			t.Errorf("Link %q lacks %s", link, want)
		}
	}
	// An ETag answers a conditional GET with an empty 304.
	resp2, body2 := get(t, s, "/repos/acme/models/issues/1/comments?per_page=2&page=2", "tok-12345678", "If-None-Match", resp.Header.Get("ETag"))
	if resp2.StatusCode != http.StatusNotModified || len(body2) != 0 {
		t.Errorf("conditional GET: %d, %d bytes", resp2.StatusCode, len(body2))
	}
}

func TestRefusals(t *testing.T) {
	s := New(t)
	s.AddToken("tok-12345678", "bot")
	s.AddPull("acme/models", Pull{Number: 1, HeadSHA: "abc"})
	s.ExpectInvalid()

	// per_page must be an integer.
	if resp, _ := get(t, s, "/repos/acme/models/issues/1/comments?per_page=many", "tok-12345678"); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("per_page=many: %d", resp.StatusCode)
	}
	// No such operation (in what Merlin uses).
	if resp, _ := get(t, s, "/repos/acme/models/pulls/1/files", "tok-12345678"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("pulls/1/files: %d", resp.StatusCode)
	}
	// Hammering: a request while a rate limit is in force.
	s.Fail(1, TooManyRequests(60))
	if resp, _ := get(t, s, "/repos/acme/models/pulls/1", "tok-12345678"); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "60" {
		t.Errorf("fault: %d %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	get(t, s, "/repos/acme/models/pulls/1", "tok-12345678")
	inv := s.InvalidRequests()
	if len(inv) != 3 || !strings.Contains(inv[0].Error(), "per_page") || !strings.Contains(inv[2].Error(), "hammering") {
		t.Errorf("refusals %v", inv)
	}
	// Once the limit is over: bad credentials and expired ones are 401s.
	s.Advance(61 * time.Second)
	if resp, _ := get(t, s, "/repos/acme/models/pulls/1", "wrong-token"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong token: %d", resp.StatusCode)
	}
	s.mu.Lock()
	s.tokens["ghs_expiring"] = identity{login: "merlin[bot]", bot: true, expires: s.clock().Add(time.Minute)}
	s.mu.Unlock()
	s.Advance(2 * time.Minute)
	if resp, _ := get(t, s, "/repos/acme/models/pulls/1", "ghs_expiring"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("expired token: %d", resp.StatusCode)
	}
	if n := len(s.InvalidRequests()); n != 3 {
		t.Errorf("%d refusals, want still 3", n)
	}
	calls := s.Calls()
	if len(calls) != 6 || calls[2].Endpoint != "/repos/{owner}/{repo}/pulls/{pull_number}" || calls[4].Identity != "" {
		t.Errorf("call log %+v", calls)
	}
}
