package webhooks_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"merlin.dev/merlin/webhooks"
)

// FuzzDecide: any body under any event name is decided without a panic,
// and whatever is queued is for a configured repository.
func FuzzDecide(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "github-webhooks", "octokit", "*", "*.json"))
	for _, file := range files {
		body, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(filepath.Base(filepath.Dir(file)), body)
	}
	repos := []webhooks.Repo{{Name: "models", FullName: fullName, Branch: "master", Secret: secret}}
	f.Fuzz(func(t *testing.T, kind string, body []byte) {
		d, err := webhooks.Decide(kind, body, secret, repos, webhooks.Meta{Delivery: "x"})
		if err != nil {
			return
		}
		for _, ev := range d.Events {
			var repo string
			switch e := ev.(type) {
			case webhooks.Push:
				repo = e.Repo
			case webhooks.PullRequest:
				repo = e.Repo
			case webhooks.Comment:
				repo = e.Repo
			}
			if repo != "models" {
				t.Fatalf("event for %q", repo)
			}
		}
		if _, err := webhooks.Decide(kind, body, []byte("other"), repos, webhooks.Meta{}); err == nil {
			if d2, _ := webhooks.Decide(kind, body, []byte("other"), repos, webhooks.Meta{}); len(d2.Events) > 0 {
				t.Fatal("events decided for a secret no repository has")
			}
		}
	})
}

// FuzzVerify: no header but the right one verifies (its hex digits in
// either case: they decode to the same MAC).
func FuzzVerify(f *testing.F) {
	f.Add("sha256=00", []byte("{}"))
	f.Add(webhooks.SignatureHeader(secret, []byte("{}")), []byte("{}"))
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		_, err := webhooks.Verify(header, body, [][]byte{secret})
		hexSum, ok := strings.CutPrefix(header, "sha256=")
		right := ok && strings.EqualFold(hexSum, strings.TrimPrefix(webhooks.SignatureHeader(secret, body), "sha256="))
		if (err == nil) != right {
			t.Fatalf("Verify(%q) = %v", header, err)
		}
	})
}
