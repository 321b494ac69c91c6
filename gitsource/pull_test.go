package gitsource

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"

	"merlin.dev/merlin/internal/gittest"
)

func mustFetchPull(t testing.TB, src *Source, n int, want string) {
	t.Helper()
	sha, err := src.FetchPull(testCtx(t), n)
	if err != nil {
		t.Fatalf("FetchPull(%d): %v", n, err)
	}
	if sha != want {
		t.Fatalf("FetchPull(%d) = %s, want %s", n, sha, want)
	}
}

func mustCurrent(t testing.TB, src *Source, want string) {
	t.Helper()
	if rev, ok := src.Current(); !ok || rev.SHA != want {
		t.Fatalf("Current = %s (ok %v), want %s", rev.SHA, ok, want)
	}
}

func TestFetchPull(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		serve func(*testing.T, *gittest.Repo) string
	}{
		{"git-daemon", func(t *testing.T, r *gittest.Repo) string { _, url := gittest.StartDaemon(t, r); return url }},
		{"http", func(t *testing.T, r *gittest.Repo) string { url, _ := gittest.StartHTTP(t, r, false, ""); return url }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			repo := gittest.NewRepo(t)
			src, _ := newSource(t, tc.serve(t, repo), nil)
			main := repo.Commit("main", map[string]string{"a.txt": "main\n"})
			mustFetch(t, src, main)

			pr := repo.PullHead(7, map[string]string{"a.txt": "pr\n", "new.txt": "new\n"})
			mustFetchPull(t, src, 7, pr)
			mustRead(t, src, pr, "a.txt", "pr\n")
			mustRead(t, src, pr, "new.txt", "new\n")
			mustCurrent(t, src, main)
			mustRead(t, src, main, "a.txt", "main\n")
			mustChanged(t, src, main, pr, "a.txt", "new.txt")

			// Already up to date is not an error.
			mustFetchPull(t, src, 7, pr)

			// A new push to the pull request is fetched.
			pr2 := repo.PullHead(7, map[string]string{"a.txt": "pr2\n"})
			mustFetchPull(t, src, 7, pr2)
			mustRead(t, src, pr2, "a.txt", "pr2\n")
			mustCurrent(t, src, main)

			// The branch moving on does not disturb the pull request.
			main2 := repo.Commit("main2", map[string]string{"b.txt": "b\n"})
			mustFetch(t, src, main2)
			mustRead(t, src, pr2, "new.txt", "new\n")

			_, err := src.FetchPull(testCtx(t), 8)
			if !errors.Is(err, ErrPullNotFound) || !strings.Contains(err.Error(), "refs/pull/8/head") {
				t.Fatalf("FetchPull(8) = %v, want ErrPullNotFound naming refs/pull/8/head", err)
			}
			if errors.Is(err, ErrBranchNotFound) {
				t.Fatalf("FetchPull(8) = %v, also matches ErrBranchNotFound", err)
			}
			mustCurrent(t, src, main2)

			// A closed pull request whose head GitHub dropped.
			repo.DeletePullHead(7)
			if _, err := src.FetchPull(testCtx(t), 7); !errors.Is(err, ErrPullNotFound) {
				t.Fatalf("FetchPull(7) after its head was deleted = %v, want ErrPullNotFound", err)
			}
		})
	}
}

func TestFetchPullInvalid(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	src, _ := newSource(t, repo.Bare, nil)
	for _, n := range []int{0, -1} {
		if _, err := src.FetchPull(testCtx(t), n); err == nil {
			t.Errorf("FetchPull(%d) succeeded", n)
		}
		if err := src.ForgetPull(n); err == nil {
			t.Errorf("ForgetPull(%d) succeeded", n)
		}
	}
}

// TestFetchPullBeforeFetch: a pull request can be fetched into an empty
// store; Current stays unset.
func TestFetchPullBeforeFetch(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	_, url := gittest.StartDaemon(t, repo)
	src, _ := newSource(t, url, nil)
	repo.Commit("main", map[string]string{"a.txt": "main\n"})
	pr := repo.PullHead(3, map[string]string{"a.txt": "pr\n"})
	mustFetchPull(t, src, 3, pr)
	mustRead(t, src, pr, "a.txt", "pr\n")
	if rev, ok := src.Current(); ok {
		t.Fatalf("Current = %s after FetchPull only", rev.SHA)
	}
}

func TestForgetPull(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	src, _ := newSource(t, repo.Bare, nil)
	main := repo.Commit("main", map[string]string{"a.txt": "main\n"})
	mustFetch(t, src, main)
	pr := repo.PullHead(5, map[string]string{"a.txt": "pr\n"})
	mustFetchPull(t, src, 5, pr)
	if err := src.ForgetPull(5); err != nil {
		t.Fatalf("ForgetPull: %v", err)
	}
	if _, err := src.gen.w.Reference(localPullRef(5)); !errors.Is(err, plumbing.ErrReferenceNotFound) {
		t.Fatalf("ref after ForgetPull: %v", err)
	}
	if err := src.ForgetPull(6); err != nil { // never fetched: nothing to do
		t.Fatalf("ForgetPull(6): %v", err)
	}
	// The forgotten head is gone after the next compaction.
	mustFetch(t, src, repo.Commit("main2", map[string]string{"b.txt": "b\n"}))
	src.fetchSem <- struct{}{}
	err := src.compact()
	<-src.fetchSem
	if err != nil {
		t.Fatalf("compact: %v", err)
	}
	if _, err := src.Tree(pr); !errors.Is(err, ErrRevisionNotFound) {
		t.Fatalf("Tree(forgotten pull head) = %v, want ErrRevisionNotFound", err)
	}
}

// TestPullSurvivesCompaction: compactions carry fetched pull request heads
// and their refs into the new store.
func TestPullSurvivesCompaction(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	src, logs := newSource(t, repo.Bare, func(c *Config) { c.CompactEvery = 2; c.KeepRevisions = 1 })
	mustFetch(t, src, repo.Commit("main", map[string]string{"a.txt": "main\n"}))
	pr := repo.PullHead(9, map[string]string{"a.txt": "pr\n"})
	mustFetchPull(t, src, 9, pr)
	for i := range 4 {
		mustFetch(t, src, repo.Commit("more", map[string]string{"n.txt": strings.Repeat("x", i+1)}))
	}
	if !strings.Contains(logs.String(), "compacted store") {
		t.Fatalf("no compaction; logs:\n%s", logs.String())
	}
	mustRead(t, src, pr, "a.txt", "pr\n")
	mustFetchPull(t, src, 9, pr) // still up to date
}

// TestFetchPullConcurrentWithFetch runs pull request fetches beside branch
// fetches and reads (meaningful under -race).
func TestFetchPullConcurrentWithFetch(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	_, url := gittest.StartDaemon(t, repo)
	src, _ := newSource(t, url, func(c *Config) { c.CompactEvery = 3 })
	main := repo.Commit("main", map[string]string{"a.txt": "main\n"})
	prs := map[int]string{}
	for n := 1; n <= 4; n++ {
		prs[n] = repo.PullHead(n, map[string]string{"pr.txt": strings.Repeat("p", n)})
	}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 3 {
		wg.Go(func() {
			if _, err := src.Fetch(testCtx(t)); err != nil {
				errs <- err
			}
		})
	}
	for n, want := range prs {
		wg.Go(func() {
			sha, err := src.FetchPull(testCtx(t), n)
			if err != nil {
				errs <- err
				return
			}
			if sha != want {
				errs <- errors.New("pull " + sha + " != " + want)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mustCurrent(t, src, main)
	for n, sha := range prs {
		mustRead(t, src, sha, "pr.txt", strings.Repeat("p", n))
	}
}
