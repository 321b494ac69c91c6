package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"merlin.dev/merlin/reconciler"
	"merlin.dev/merlin/rollout"
	"merlin.dev/merlin/serving"
)

// answer is a response, its body read.
type answer struct {
	StatusCode int
	Header     http.Header
}

// send makes one request with the given headers ("Host" sets the Host).
func send(t *testing.T, method, url string, header map[string]string) (answer, string) {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("{}")
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header}, string(b)
}

const jsonType = "application/json"

func TestCommandsNeedTheToken(t *testing.T) {
	srv, repo := newTestServerWith(t, Options{Token: "s3cret-token"})
	promote := srv.URL + "/api/v1/models/iris/promote"
	for _, tc := range []struct {
		name   string
		header map[string]string
	}{
		{"no token", map[string]string{"Content-Type": jsonType}},
		{"wrong token", map[string]string{"Content-Type": jsonType, "Authorization": "Bearer s3cret-tokeN"}},
		{"token prefix", map[string]string{"Content-Type": jsonType, "Authorization": "Bearer s3cret"}},
		{"empty token", map[string]string{"Content-Type": jsonType, "Authorization": "Bearer "}},
		{"basic auth", map[string]string{"Content-Type": jsonType, "Authorization": "Basic czNjcmV0LXRva2Vu"}},
	} {
		resp, body := send(t, "POST", promote, tc.header)
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") ||
			resp.Header.Get("Content-Type") != jsonType || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %d %q %s, want 401 with WWW-Authenticate: Bearer and a JSON error", tc.name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
	}
	if len(repo.commands) != 0 {
		t.Fatalf("unauthenticated commands reached the reconciler: %v", repo.commands)
	}
	// Reads stay open.
	for _, path := range []string{"/", "/api/v1/models", "/api/v1/models/iris", "/api/v1/repos", "/healthz"} {
		if resp, body := send(t, "GET", srv.URL+path, nil); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without a token = %d %s, want 200", path, resp.StatusCode, body)
		}
	}
	for _, auth := range []string{"Bearer s3cret-token", "bearer s3cret-token"} {
		resp, body := send(t, "POST", promote, map[string]string{"Content-Type": jsonType, "Authorization": auth})
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"phase": "Progressing"`) {
			t.Errorf("%q: %d %s, want 200", auth, resp.StatusCode, body)
		}
	}
	if len(repo.commands) != 2 || repo.commands[0] != "iris promote" {
		t.Errorf("commands with the token: %v, want iris promote twice", repo.commands)
	}
}

// TestCrossSiteCommandsRefused: what a page of another site can make a
// browser send (a form, a text/plain fetch, with its Origin) acts on
// nothing, even on a loopback daemon without a token.
func TestCrossSiteCommandsRefused(t *testing.T) {
	srv, repo := newTestServer(t)
	pause := srv.URL + "/api/v1/models/iris/pause"
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, tc := range []struct {
		name   string
		header map[string]string
		code   int
	}{
		{"form from another site", map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"}, 403},
		{"text/plain from another site", map[string]string{"Content-Type": "text/plain", "Origin": "https://evil.example"}, 403},
		{"multipart from another site", map[string]string{"Content-Type": "multipart/form-data; boundary=x", "Origin": "http://evil.example"}, 403},
		{"json from another site", map[string]string{"Content-Type": jsonType, "Origin": "http://evil.example"}, 403},
		{"opaque origin", map[string]string{"Content-Type": jsonType, "Origin": "null"}, 403},
		{"text/plain without Origin", map[string]string{"Content-Type": "text/plain"}, 415},
		{"form without Origin", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415},
		{"no Content-Type", map[string]string{}, 415},
		{"json-looking", map[string]string{"Content-Type": "text/json"}, 415},
	} {
		if resp, body := send(t, "POST", pause, tc.header); resp.StatusCode != tc.code || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %d %s, want %d", tc.name, resp.StatusCode, body, tc.code)
		}
	}
	if len(repo.commands) != 0 {
		t.Fatalf("refused requests reached the reconciler: %v", repo.commands)
	}
	for _, h := range []map[string]string{
		{"Content-Type": "application/json; charset=utf-8"},
		{"Content-Type": jsonType, "Origin": "http://" + host},
	} {
		if resp, body := send(t, "POST", pause, h); resp.StatusCode != http.StatusOK {
			t.Errorf("%v: %d %s, want 200", h, resp.StatusCode, body)
		}
	}
	if len(repo.commands) != 2 {
		t.Errorf("commands: %v, want two", repo.commands)
	}
}

// TestHostChecked: with AllowedHosts (a loopback listener), a request for
// any other name — a rebound DNS name — is refused, reads included.
func TestHostChecked(t *testing.T) {
	srv, repo := newTestServerWith(t, Options{AllowedHosts: []string{"127.0.0.1", "merlin.internal"}})
	for _, tc := range []struct {
		host string
		code int
	}{
		{"evil.example", 403},
		{"evil.example:9292", 403},
		{"127.0.0.1.evil.example", 403},
		{"localhost.evil.example:80", 403},
		{"10.0.0.1:9292", 403},
		{"127.0.0.1:9292", 200},
		{"127.3.4.5", 200},
		{"localhost:9292", 200},
		{"LOCALHOST", 200},
		{"app.localhost:1", 200},
		{"[::1]:9292", 200},
		{"merlin.internal:9292", 200},
		{"Merlin.Internal", 200},
	} {
		for _, method := range []string{"GET", "POST"} {
			path := "/api/v1/models"
			if method == "POST" {
				path = "/api/v1/models/iris/resume"
			}
			resp, body := send(t, method, srv.URL+path, map[string]string{"Host": tc.host, "Content-Type": jsonType})
			if resp.StatusCode != tc.code || tc.code == 403 && !strings.Contains(body, "unexpected Host") {
				t.Errorf("%s Host %s = %d %s, want %d", method, tc.host, resp.StatusCode, body, tc.code)
			}
		}
	}
	if n := len(repo.commands); n != 8 {
		t.Errorf("%d commands executed, want one per allowed host (8): %v", n, repo.commands)
	}
	// Without AllowedHosts (a listener beyond loopback, with a token) any
	// name reaches the server: clients use the names a cluster gives it.
	open, _ := newTestServer(t)
	if resp, body := send(t, "GET", open.URL+"/api/v1/models", map[string]string{"Host": "merlin.merlin-system.svc:9292"}); resp.StatusCode != 200 {
		t.Errorf("open server, service name: %d %s", resp.StatusCode, body)
	}
}

func TestSecurityHeaders(t *testing.T) {
	srv, _ := newTestServerWith(t, Options{Token: "t", AllowedHosts: []string{"127.0.0.1"}})
	for _, tc := range []struct{ method, path, host string }{
		{"GET", "/", ""},
		{"GET", "/api/v1/models", ""},
		{"GET", "/api/v1/models/nope", ""},
		{"GET", "/api/v1/repos", ""},
		{"GET", "/healthz", ""},
		{"POST", "/api/v1/models/iris/promote", ""},
		{"GET", "/", "evil.example"},
	} {
		resp, _ := send(t, tc.method, srv.URL+tc.path, map[string]string{"Host": tc.host})
		h := resp.Header
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") ||
			h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s %s (%d): headers %v", tc.method, tc.path, resp.StatusCode, h)
		}
	}
}

// TestPageEscapes: names, files and errors come from repositories anyone
// may commit to; the page shows them as text.
func TestPageEscapes(t *testing.T) {
	const evil = `<script>alert("x")</script>`
	repo := &repoFixture{status: reconciler.Status{Repo: "models", Models: []serving.ModelStatus{{
		Name: "m" + evil, File: "f" + evil + "/merlin.yaml", Phase: rollout.Progressing, Reason: "r" + evil,
		LastError: "e" + evil,
		Versions:  []serving.VersionStatus{{Version: "v" + evil, Role: serving.RoleStable, Weight: 100, State: serving.StateFailed, LastError: `"><img src=x onerror=alert(1)>`}},
		Analysis:  &rollout.Result{Verdict: rollout.Verdict(`fail" onmouseover="alert(1)`), Summary: "s" + evil},
	}}}}
	srv := httptest.NewServer(New(Options{Repos: []Repo{repo}, Version: "v" + evil}))
	defer srv.Close()
	resp, body := send(t, "GET", srv.URL+"/", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, bad := range []string{"<script", "<img", `" onmouseover="`} {
		if strings.Contains(body, bad) {
			t.Errorf("page contains %q unescaped:\n%s", bad, body)
		}
	}
	for _, want := range []string{"m&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;", "e&lt;script&gt;", "f&lt;script&gt;", "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;", "s&lt;script&gt;"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks the escaped %q:\n%s", want, body)
		}
	}
}
