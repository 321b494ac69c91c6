package github_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/internal/githubtest"
	"merlin.dev/merlin/scm/github"
)

// appKey writes a fresh RSA key as PEM.
func appKey(t *testing.T) (*rsa.PrivateKey, string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "app.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return key, path
}

func TestAppInstallationToken(t *testing.T) {
	fake := githubtest.New(t)
	fake.AddPull(repo, githubtest.Pull{Number: 7, HeadSHA: strings.Repeat("a", 40)})
	key, path := appKey(t)
	fake.AddApp(42, &key.PublicKey, time.Hour)
	c, err := github.New(github.Options{Repo: repo, APIURL: fake.URL, App: &github.App{ID: 42, InstallationID: 678, PrivateKeyFile: path},
		Policy: fastPolicy, Now: fake.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sha := strings.Repeat("a", 40)
	for range 2 {
		if err := c.SetStatus(ctx, sha, github.Status{Model: "iris", State: github.Success}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(fake.CallsTo("POST", mintEP)); n != 1 {
		t.Errorf("%d installation tokens minted for two calls, want 1", n)
	}
	for _, call := range fake.CallsTo("POST", statusEP) {
		if call.Identity != "merlin[bot]" || call.Status != http.StatusCreated {
			t.Errorf("status call %+v, want it made as merlin[bot]", call)
		}
	}

	// 56 minutes on, the hour-long token is within 5 minutes of expiry:
	// a new one is minted before the next call, which goes through.
	fake.Advance(56 * time.Minute)
	if err := c.SetStatus(ctx, sha, github.Status{Model: "iris", State: github.Failure}); err != nil {
		t.Fatal(err)
	}
	if n := len(fake.CallsTo("POST", mintEP)); n != 2 {
		t.Errorf("%d installation tokens minted, want 2 (refreshed)", n)
	}
	if st := fake.LatestStatuses(repo, sha)["merlin/iris"]; st.State != "failure" {
		t.Errorf("latest status %+v", st)
	}

	// A revoked token: refused once, a new one minted, the call goes through.
	fake.RevokeTokens()
	fake.ResetCalls()
	if err := c.SetStatus(ctx, sha, github.Status{Model: "iris", State: github.Success}); err != nil {
		t.Fatal(err)
	}
	if s := statuses(fake.Calls()); fmt.Sprint(s) != "[401 201 201]" {
		t.Errorf("after revocation: statuses %v, want [401 201 201] (refused, minted, set)", s)
	}

	// A key GitHub does not know: the JWT is refused and nothing else sent.
	_, otherPath := appKey(t)
	c2, err := github.New(github.Options{Repo: repo, APIURL: fake.URL, App: &github.App{ID: 42, InstallationID: 678, PrivateKeyFile: otherPath},
		Policy: fastPolicy, Now: fake.Now})
	if err != nil {
		t.Fatal(err)
	}
	fake.ResetCalls()
	if err := c2.SetStatus(ctx, sha, github.Status{Model: "iris", State: github.Success}); err == nil {
		t.Error("a JWT signed with the wrong key was accepted")
	}
	if s := statuses(fake.Calls()); fmt.Sprint(s) != "[401]" {
		t.Errorf("statuses %v, want [401]", s)
	}
}

func TestAppTokenMintedOnceUnderConcurrency(t *testing.T) {
	fake := githubtest.New(t)
	fake.AddPull(repo, githubtest.Pull{Number: 7, HeadSHA: strings.Repeat("a", 40)})
	key, path := appKey(t)
	fake.AddApp(42, &key.PublicKey, time.Hour)
	c, err := github.New(github.Options{Repo: repo, APIURL: fake.URL, App: &github.App{ID: 42, InstallationID: 678, PrivateKeyFile: path}, Policy: fastPolicy})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 10)
	for i := range 10 {
		go func() {
			_, err := c.CreateComment(context.Background(), 7, fmt.Sprintf("comment %d", i))
			errs <- err
		}()
	}
	for range 10 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := len(fake.CallsTo("POST", mintEP)); n != 1 {
		t.Errorf("%d installation tokens minted for 10 concurrent calls, want 1", n)
	}
	for _, cm := range fake.Comments(repo, 7) {
		if cm.Author != "merlin[bot]" {
			t.Errorf("comment by %s", cm.Author)
		}
	}
}
