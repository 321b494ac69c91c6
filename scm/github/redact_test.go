package github_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/internal/githubtest"
	"merlin.dev/merlin/scm/github"
)

func TestSecretsRedacted(t *testing.T) {
	fake, c, logs := setup(t)
	ctx := context.Background()
	fake.Fail(1, githubtest.Fault{Status: http.StatusBadRequest, Message: "Bad request", EchoAuthorization: true})
	_, err := c.PullRequest(ctx, 7)
	if err == nil {
		t.Fatal("no error")
	}
	if strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "[REDACTED]") {
		t.Errorf("error not scrubbed: %v", err)
	}
	// Waited out and logged, with the echoed token nowhere.
	fake.Fail(1, githubtest.Fault{Status: http.StatusTooManyRequests, RetryAfter: 1, Message: "slow down", EchoAuthorization: true})
	if _, err := c.PullRequest(ctx, 7); err != nil {
		t.Fatal(err)
	}

	// The App's JWT and installation token.
	key, path := appKey(t)
	fake.AddApp(42, &key.PublicKey, time.Hour)
	app, err2 := github.New(github.Options{Repo: repo, APIURL: fake.URL, App: &github.App{ID: 42, InstallationID: 678, PrivateKeyFile: path},
		Policy: fastPolicy, Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err2 != nil {
		t.Fatal(err2)
	}
	fake.Fail(1, githubtest.Fault{Status: http.StatusBadRequest, Message: "Bad request", EchoAuthorization: true})
	errMint := app.SetStatus(ctx, strings.Repeat("a", 40), github.Status{Model: "iris", State: github.Success})
	if err := app.SetStatus(ctx, strings.Repeat("a", 40), github.Status{Model: "iris", State: github.Success}); err != nil {
		t.Fatal(err)
	}
	fake.Fail(1, githubtest.Fault{Status: http.StatusBadRequest, Message: "Bad request", EchoAuthorization: true})
	errInst := app.SetStatus(ctx, strings.Repeat("a", 40), github.Status{Model: "iris", State: github.Success})

	pemBytes, _ := os.ReadFile(path)
	for name, e := range map[string]error{"token": err, "jwt": errMint, "installation token": errInst} {
		if e == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		if strings.Contains(e.Error(), "Bearer ey") || strings.Contains(e.Error(), "ghs_") || strings.Contains(e.Error(), token) ||
			!strings.Contains(e.Error(), "[REDACTED]") {
			t.Errorf("%s: error not scrubbed: %v", name, e)
		}
	}
	for _, secret := range []string{token, "ghs_", "Bearer ", string(pemBytes)} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("logs carry a secret (%.8s…): %s", secret, logs)
		}
	}
}
