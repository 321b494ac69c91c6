package daemon

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"merlin.dev/merlin/internal/gittest"
)

// TestRouterServerEndpoints: a real daemon's router answers the Open
// Inference Protocol's server-level endpoints itself, on its own listener
// and on merlin up's combined one (where GET /v2 was a redirect to /v2/,
// then a 404), with the daemon's version and without X-Merlin-Version.
func TestRouterServerEndpoints(t *testing.T) {
	repo := gittest.NewRepo(t)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, combined := range []string{"", "127.0.0.1:0"} {
		config := fmt.Sprintf("repositories: [{name: models, url: %s}]\nlocal: {listen: 127.0.0.1:0, stateDir: %s}\nserver: {listen: 127.0.0.1:0}\n",
			repo.Bare, t.TempDir())
		r := startDaemonWith(t, "oip", config, Options{CombinedListen: combined, Version: "v9.9.9-test"})
		base := "http://" + r.d.ModelsAddr()
		for path, want := range map[string]string{
			"/v2":              `{"extensions":[],"name":"merlin","version":"v9.9.9-test"}`,
			"/v2/":             `{"extensions":[],"name":"merlin","version":"v9.9.9-test"}`,
			"/v2/health/live":  `{"live":true}`,
			"/v2/health/ready": `{"ready":true}`,
			"/v1/models":       `{"models":[]}`,
		} {
			resp, err := noRedirect.Get(base + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != want || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("combined %q: GET %s: %d %s %s; want 200 %s", combined, path, resp.StatusCode, resp.Header.Get("Content-Type"), body, want)
			}
			if v, ok := resp.Header["X-Merlin-Version"]; ok {
				t.Errorf("combined %q: GET %s: X-Merlin-Version %v on a server-level endpoint", combined, path, v)
			}
		}
	}
}
