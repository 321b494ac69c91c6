package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/internal/gittest"
)

// apiConfig is a local-target configuration watching an empty repository,
// with the API on listen and extra keys in the server block.
func apiConfig(t *testing.T, listen, server string) *Config {
	t.Helper()
	repo := gittest.NewRepo(t)
	cfg, err := ParseConfig("c.yaml", fmt.Appendf(nil, "repositories: [{name: models, url: %s}]\nlocal: {listen: 127.0.0.1:0, stateDir: %s}\nserver: {listen: %q%s}\n",
		repo.Bare, t.TempDir(), listen, server))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestAPIBeyondLoopbackNeedsToken(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:9292", "merlin.example.com:9292"} {
		_, err := New(apiConfig(t, listen, ""), Options{Logger: quiet()})
		if err == nil || !strings.Contains(err.Error(), "server.tokenEnv") || !strings.Contains(err.Error(), "beyond this machine") {
			t.Errorf("listen %s without a token: err = %v, want a refusal naming server.tokenEnv", listen, err)
		}
	}
	_, err := New(apiConfig(t, "127.0.0.1:0", ", tokenEnv: MERLIN_TEST_EMPTY_TOKEN"), Options{Logger: quiet()})
	if err == nil || !strings.Contains(err.Error(), "MERLIN_TEST_EMPTY_TOKEN") || !strings.Contains(err.Error(), "empty") {
		t.Errorf("tokenEnv naming an unset variable: err = %v", err)
	}
	// merlin up's address is checked the same way.
	_, err = New(apiConfig(t, "127.0.0.1:0", ""), Options{Logger: quiet(), CombinedListen: "0.0.0.0:0"})
	if err == nil || !strings.Contains(err.Error(), "MERLIN_API_TOKEN") {
		t.Errorf("combined listen beyond loopback without a token: err = %v", err)
	}
}

// start runs a daemon until the test ends and returns its API's base URL.
func start(t *testing.T, cfg *Config) string {
	t.Helper()
	d, err := New(cfg, Options{Logger: quiet(), Tick: 50 * time.Millisecond, StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	_, port, err := net.SplitHostPort(d.APIAddr())
	if err != nil {
		t.Fatal(err)
	}
	return "http://127.0.0.1:" + port
}

func post(t *testing.T, url string, header map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
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
	return resp.StatusCode, string(b)
}

// TestAPIToken: a daemon on every interface with server.tokenEnv starts,
// and its rollout commands need the token. A command that passes the
// checks reaches the repositories: it answers 404 for an unknown model.
func TestAPIToken(t *testing.T) {
	t.Setenv("MERLIN_TEST_TOKEN", "abc123")
	api := start(t, apiConfig(t, "0.0.0.0:0", ", tokenEnv: MERLIN_TEST_TOKEN"))
	cmd := api + "/api/v1/models/iris/promote"
	if code, body := post(t, cmd, nil); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d %s, want 401", code, body)
	}
	if code, body := post(t, cmd, map[string]string{"Authorization": "Bearer abc124"}); code != http.StatusUnauthorized {
		t.Errorf("with a wrong token: %d %s, want 401", code, body)
	}
	if code, body := post(t, cmd, map[string]string{"Authorization": "Bearer abc123"}); code != http.StatusNotFound || !strings.Contains(body, "model iris not found") {
		t.Errorf("with the token: %d %s, want 404 model iris not found", code, body)
	}
	// Beyond loopback any Host is answered (the token guards commands).
	if code, body := post(t, cmd, map[string]string{"Authorization": "Bearer abc123", "Host": "merlin.merlin-system.svc:9292"}); code != http.StatusNotFound {
		t.Errorf("service name as Host: %d %s, want 404", code, body)
	}
	resp, err := http.Get(api + "/api/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("GET /api/v1/models without a token = %d %v", resp.StatusCode, resp.Header)
	}
}

// TestLoopbackAPI: without a token a loopback daemon starts; it answers
// only requests that name it (loopback, or server.allowedHosts).
func TestLoopbackAPI(t *testing.T) {
	api := start(t, apiConfig(t, "127.0.0.1:0", ", allowedHosts: [merlin.test]"))
	cmd := api + "/api/v1/models/iris/pause"
	for host, want := range map[string]int{"": 404, "localhost:9292": 404, "merlin.test:80": 404, "rebound.evil.example:9292": 403} {
		if code, body := post(t, cmd, map[string]string{"Host": host}); code != want {
			t.Errorf("Host %q: %d %s, want %d", host, code, body, want)
		}
	}
	if code, body := post(t, cmd, map[string]string{"Content-Type": "text/plain", "Origin": "https://evil.example"}); code != http.StatusForbidden {
		t.Errorf("cross-site text/plain POST: %d %s, want 403", code, body)
	}
}
