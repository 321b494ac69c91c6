package githubtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
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

// listedPulls GETs a page of pull requests and returns their numbers.
func listedPulls(t *testing.T, s *Server, query string, header ...string) (answer, []int) {
	t.Helper()
	resp, body := get(t, s, "/repos/acme/models/pulls?"+query, "tok-12345678", header...)
	if resp.StatusCode != http.StatusOK {
		return resp, nil
	}
	var items []struct {
		Number int    `json:"number"`
		State  string `json:"state"`
		Base   struct {
			Ref string `json:"ref"`
		} `json:"base"`
	}
	if err := json.Unmarshal(body, &items); err != nil {
		t.Fatal(err)
	}
	ns := []int{}
	for _, it := range items {
		ns = append(ns, it.Number)
	}
	return resp, ns
}

func TestListPulls(t *testing.T) {
	s := New(t)
	s.AddToken("tok-12345678", "bot")
	for n := 1; n <= 7; n++ {
		p := Pull{Number: n, Title: "p", Author: "alice", HeadRef: "b", HeadSHA: strings.Repeat("a", 40)}
		switch n {
		case 3:
			p.State = "closed"
		case 5:
			p.BaseRef = "release"
		}
		s.AddPull("acme/models", p)
	}
	s.AddPull("acme/other", Pull{Number: 8, HeadSHA: "abc"})

	q := "state=open&base=main&sort=created&direction=asc&per_page=2"
	var got []int
	var links []string
	for page := 1; page <= 3; page++ {
		resp, ns := listedPulls(t, s, fmt.Sprintf("%s&page=%d", q, page))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("page %d: %d", page, resp.StatusCode)
		}
		got = append(got, ns...)
		links = append(links, resp.Header.Get("Link"))
	}
	if fmt.Sprint(got) != "[1 2 4 6 7]" {
		t.Errorf("open pulls into main %v, want [1 2 4 6 7]", got)
	}
	// GitHub keeps the request's query in the links and sets page and per_page.
	keep := "base=main&direction=asc&page=%d&per_page=2&sort=created&state=open>; rel=%q"
	for i, want := range [][]string{
		{fmt.Sprintf(keep, 2, "next"), fmt.Sprintf(keep, 3, "last")},
		{fmt.Sprintf(keep, 3, "next"), fmt.Sprintf(keep, 3, "last"), fmt.Sprintf(keep, 1, "first"), fmt.Sprintf(keep, 1, "prev")},
		{fmt.Sprintf(keep, 1, "first"), fmt.Sprintf(keep, 2, "prev")},
	} {
		parts := strings.Split(links[i], ", ")
		if len(parts) != len(want) {
			t.Errorf("page %d: Link %q, want %d parts", i+1, links[i], len(want))
			continue
		}
		for j, w := range want {
			if !strings.HasPrefix(parts[j], "<http://") || !strings.Contains(parts[j], "/api/v3/repos/acme/models/pulls?") || !strings.HasSuffix(parts[j], w) {
				t.Errorf("page %d: Link part %q, want …/api/v3/repos/acme/models/pulls?%s", i+1, parts[j], w)
			}
		}
	}
	// One page, no Link; other filters and orders.
	for query, want := range map[string]string{
		"":                        "[7 6 5 4 2 1]", // open, newest first (same second: by number)
		"state=all&direction=asc": "[1 2 3 4 5 6 7]",
		"state=closed":            "[3]",
		"base=release":            "[5]",
		"head=acme:b&state=all&per_page=1&page=9": "[]",
	} {
		resp, ns := listedPulls(t, s, query)
		if fmt.Sprint(ns) != want {
			t.Errorf("?%s: %v, want %s", query, ns, want)
		}
		if l := resp.Header.Get("Link"); l != "" && !strings.Contains(query, "per_page=1") {
			t.Errorf("?%s: Link %q on the only page", query, l)
		}
	}

	// Unchanged: 304, free; a closed pull request changes the list.
	resp, _ := listedPulls(t, s, q+"&page=1")
	before := s.RateLimitRemaining()
	resp2, _ := listedPulls(t, s, q+"&page=1", "If-None-Match", resp.Header.Get("ETag"))
	if resp2.StatusCode != http.StatusNotModified || s.RateLimitRemaining() != before {
		t.Errorf("unchanged list: %d, rate limit %d → %d", resp2.StatusCode, before, s.RateLimitRemaining())
	}
	s.UpdatePull("acme/models", 2, func(p *Pull) { p.Merged = true })
	resp3, ns := listedPulls(t, s, q+"&page=1", "If-None-Match", resp.Header.Get("ETag"))
	if resp3.StatusCode != http.StatusOK || fmt.Sprint(ns) != "[1 4]" {
		t.Errorf("after merging #2: %d %v, want 200 [1 4]", resp3.StatusCode, ns)
	}
	if p := s.Pulls("acme/models")[1]; p.Number != 2 || p.State != "closed" || !p.Merged {
		t.Errorf("merged pull %+v", p)
	}
	// Even a change the list does not show moves updated_at, so the pull
	// request's own ETag changes.
	one, _ := get(t, s, "/repos/acme/models/pulls/1", "tok-12345678")
	s.UpdatePull("acme/models", 1, func(*Pull) {})
	if again, _ := get(t, s, "/repos/acme/models/pulls/1", "tok-12345678", "If-None-Match", one.Header.Get("ETag")); again.StatusCode != http.StatusOK {
		t.Errorf("GET pulls/1 after UpdatePull: %d, want 200", again.StatusCode)
	}
}

// recorder is a testing.TB that keeps the errors reported to it.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestListPullsValidated shows the list's answers are checked against
// pull-request-simple: a good one passes, one without head fails.
func TestListPullsValidated(t *testing.T) {
	rec := &recorder{TB: t}
	s := New(rec)
	s.AddToken("tok-12345678", "bot")
	s.AddPull("acme/models", Pull{Number: 1, Author: "alice", HeadRef: "b", HeadSHA: "abc"})
	if resp, ns := listedPulls(t, s, "per_page=100"); resp.StatusCode != http.StatusOK || len(ns) != 1 || len(rec.errs) != 0 {
		t.Fatalf("good list: %d %v, errors %q", resp.StatusCode, ns, rec.errs)
	}
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/repos/acme/models/pulls", nil)
	rt, params, ok := route(s.doc, http.MethodGet, "/repos/acme/models/pulls")
	if !ok || rt.Path != "/repos/{owner}/{repo}/pulls" {
		t.Fatalf("route: %v %v", rt, ok)
	}
	bad := pullSimpleJSON("acme/models", &Pull{Number: 1, State: "open", HeadRepo: "acme/models", BaseRef: "main"})
	delete(bad, "head")
	s.validateResponse(&openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: rt,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}, jsonReply(http.StatusOK, []any{bad}))
	if len(rec.errs) != 1 || !strings.Contains(rec.errs[0], "head") {
		t.Errorf("a pull without head: errors %q, want one about head", rec.errs)
	}
}
