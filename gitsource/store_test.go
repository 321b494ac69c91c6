package gitsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"merlin.dev/merlin/internal/gittest"
	"merlin.dev/merlin/internal/testlog"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage"
)

func TestForcePushUnrelatedHistory(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	_, url := gittest.StartDaemon(t, repo)
	src, _ := newSource(t, url, nil)
	old := repo.Commit("old", map[string]string{"keep.txt": "same\n", "gone.txt": "x\n", "mod.txt": "1\n"})
	mustFetch(t, src, old)
	unrelated := repo.Orphan("rewrite", map[string]string{"keep.txt": "same\n", "mod.txt": "2\n", "new.txt": "n\n"})
	mustHead(t, src, unrelated)
	mustFetch(t, src, unrelated)
	mustChanged(t, src, old, unrelated, "gone.txt", "mod.txt", "new.txt")
	mustRead(t, src, unrelated, "mod.txt", "2\n")
	mustRead(t, src, old, "gone.txt", "x\n")
}

// TestForcePushToUnfetchedAncestor covers go-git#1443: the head moves back to
// an ancestor this store never fetched (it only has the later commit,
// shallow).
func TestForcePushToUnfetchedAncestor(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	url, _ := gittest.StartHTTP(t, repo, false, "")
	src, _ := newSource(t, url, nil)
	a := repo.Commit("a", map[string]string{"f": "a\n"})
	mustFetch(t, src, a)
	b := repo.Commit("b", map[string]string{"f": "b\n", "g": "b\n"})
	c := repo.Commit("c", map[string]string{"f": "c\n"})
	mustFetch(t, src, c) // b is skipped
	repo.Git("reset", "--quiet", "--hard", b)
	repo.Push()
	mustHead(t, src, b)
	mustFetch(t, src, b)
	mustRead(t, src, b, "f", "b\n")
	mustChanged(t, src, c, b, "f")
	// And back to a, which we did fetch once.
	repo.Git("reset", "--quiet", "--hard", a)
	repo.Push()
	mustFetch(t, src, a)
	mustChanged(t, src, b, a, "f", "g")
}

// fetchedOverGitDaemon serves a new repository with git daemon and
// fetches its first commit, which has a file the later commits keep.
func fetchedOverGitDaemon(t *testing.T) (*gittest.Repo, *Source, *testlog.Buffer, string) {
	t.Helper()
	repo := gittest.NewRepo(t)
	_, url := gittest.StartDaemon(t, repo)
	src, logs := newSource(t, url, nil)
	first := repo.Commit("first", map[string]string{"big/unchanged.txt": "u\n", "f": "1\n"})
	mustFetch(t, src, first)
	return repo, src, logs, first
}

// TestLostPacks destroys the store's packs behind the Source's back. The
// next fetch must still give a complete revision: either the incremental
// fetch cannot be completed and Fetch re-clones, or go-git, failing to read
// its local history for the negotiation, fetches everything (which of the
// two happens depends on what go-git had already read).
func TestLostPacks(t *testing.T) {
	t.Parallel()
	repo, src, logs, first := fetchedOverGitDaemon(t)
	genBefore := src.gen.name
	packs, err := filepath.Glob(filepath.Join(src.cfg.CacheDir, genBefore, "objects", "pack", "*"))
	if err != nil || len(packs) == 0 {
		t.Fatalf("no packs to corrupt: %v", err)
	}
	for _, p := range packs {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	src.gen.wcache.Clear()
	second := repo.Commit("second", map[string]string{"f": "2\n"})
	mustFetch(t, src, second)
	if recloned := strings.Contains(logs.String(), "re-cloning"); recloned && src.gen.name == genBefore {
		t.Fatal("re-cloned, but the store directory was not replaced")
	}
	mustRead(t, src, second, "big/unchanged.txt", "u\n")
	// first's objects were lost with the packs: Changed degrades to "all".
	paths, full, err := src.ChangedFull(testCtx(t), first, second)
	if err != nil || !full || len(paths) != 2 {
		t.Fatalf("ChangedFull = %q, %v, %v; want every path and full", paths, full, err)
	}
	if _, err := src.Tree(first); !errors.Is(err, ErrRevisionNotFound) {
		t.Fatalf("Tree(first) = %v, want ErrRevisionNotFound", err)
	}
	// Later fetches work; the diff may still over-report (every path), which
	// costs a rebuild check, never a missed change.
	third := repo.Commit("third", map[string]string{"f": "3\n"})
	mustFetch(t, src, third)
	mustRead(t, src, third, "f", "3\n")
	if paths, _, err := src.ChangedFull(testCtx(t), second, third); err != nil || !slices.Contains(paths, "f") {
		t.Fatalf("ChangedFull(second, third) = %q, %v; want it to include f", paths, err)
	}
}

func TestCompaction(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	src, logs := newSource(t, "file://"+repo.Bare, func(c *Config) {
		c.CompactEvery = 3
		c.KeepRevisions = 2
	})
	var shas []string
	for i := range 7 {
		shas = append(shas, repo.Commit(fmt.Sprintf("c%d", i), map[string]string{
			"stable.txt": "s\n",
			"n.txt":      fmt.Sprintf("%d\n", i),
		}))
		mustFetch(t, src, shas[i])
	}
	if n := strings.Count(logs.String(), "compacted store"); n != 2 {
		t.Fatalf("compactions = %d, want 2; logs:\n%s", n, logs.String())
	}
	last, prev := shas[6], shas[5]
	mustChanged(t, src, prev, last, "n.txt")
	mustRead(t, src, last, "n.txt", "6\n")
	mustRead(t, src, prev, "n.txt", "5\n")
	// shas[2] was unpinned before the compaction after fetch 6.
	if _, err := src.Tree(shas[2]); !errors.Is(err, ErrRevisionNotFound) {
		t.Fatalf("Tree(dropped) = %v, want ErrRevisionNotFound", err)
	}
	// Only the current store plus one retired generation remain.
	stores, _ := filepath.Glob(filepath.Join(src.cfg.CacheDir, storePrefix+"*"))
	if len(stores) > 2 {
		t.Fatalf("store dirs = %v, want at most 2", stores)
	}

	// A new Source on the same cache dir picks up where this one stopped,
	// without the network.
	again, err := New(src.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	cur, ok := again.Current()
	if !ok || cur.SHA != last {
		t.Fatalf("Current after reopen = %+v, %v; want %s", cur, ok, last)
	}
	mustRead(t, again, prev, "n.txt", "5\n")
	stores, _ = filepath.Glob(filepath.Join(src.cfg.CacheDir, storePrefix+"*"))
	if len(stores) != 1 {
		t.Fatalf("store dirs after reopen = %v, want 1", stores)
	}
	// And it keeps fetching incrementally.
	next := repo.Commit("c7", map[string]string{"n.txt": "7\n"})
	mustFetch(t, again, next)
	mustChanged(t, again, last, next, "n.txt")
}

// TestConcurrentReadsDuringFetch runs Tree reads while fetches and
// compactions replace packs and stores (meaningful under -race).
func TestConcurrentReadsDuringFetch(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	src, _ := newSource(t, repo.Bare, func(c *Config) { c.CompactEvery = 2 })
	base := repo.Commit("base", map[string]string{"a/b.txt": "b\n"})
	mustFetch(t, src, base)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				fsys, err := src.Tree(base)
				if err != nil {
					t.Error(err)
					return
				}
				if err := fs.WalkDir(fsys, ".", func(string, fs.DirEntry, error) error { return nil }); err != nil {
					t.Error(err)
					return
				}
				if b, err := fs.ReadFile(fsys, "a/b.txt"); err != nil || string(b) != "b\n" {
					t.Errorf("read = %q, %v", b, err)
					return
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	prev := base
	for i := range 5 {
		sha := repo.Commit(fmt.Sprint(i), map[string]string{"n": fmt.Sprint(i)})
		mustFetch(t, src, sha)
		mustChanged(t, src, prev, sha, "n")
		prev = sha
	}
	cancel()
	wg.Wait()
}

func TestContextCancellation(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	repo.Commit("c", map[string]string{"a": "a"})
	src, _ := newSource(t, "git://"+stallServer(t)+"/repo.git", nil)
	for name, op := range map[string]func(context.Context) error{
		"head":  func(ctx context.Context) error { _, err := src.Head(ctx); return err },
		"fetch": func(ctx context.Context) error { _, err := src.Fetch(ctx); return err },
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		start := time.Now()
		err := op(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
			t.Fatalf("%s against a stalled server: %v after %v", name, err, time.Since(start))
		}
	}
}

func TestClassifyFetchFailure(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	for _, tc := range []struct {
		err  error
		want fetchFailure
	}{
		{fmt.Errorf("x: %w", refused), failRemote},
		{&BranchNotFoundError{Branch: "main"}, failRemote},
		{classify("main", transport.ErrAuthenticationRequired), failRemote},
		{context.DeadlineExceeded, failRemote},
		{io.ErrUnexpectedEOF, failFlaky},
		{reset, failFlaky},
		{plumbing.ErrObjectNotFound, failLocal},
		{storage.ErrReferenceHasChanged, failLocal},
		{errors.New("malformed pack file"), failLocal},
		{&fs.PathError{Op: "mkdir", Path: "objects/pack", Err: syscall.ENOTDIR}, failLocal}, // an Errno is a net.Error too
	} {
		if got := classifyFetchFailure(tc.err); got != tc.want {
			t.Errorf("classifyFetchFailure(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// TestRecloneFallback makes the store unwritable behind the Source's back
// so the next incremental fetch fails locally; Fetch must re-clone into a
// new store directory.
func TestRecloneFallback(t *testing.T) {
	t.Parallel()
	repo, src, logs, _ := fetchedOverGitDaemon(t)
	genBefore := src.gen.name
	packDir := filepath.Join(src.cfg.CacheDir, genBefore, "objects", "pack")
	if err := os.RemoveAll(packDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(packDir, []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src.gen.wcache.Clear()
	second := repo.Commit("second", map[string]string{"f": "2\n"})
	mustFetch(t, src, second)
	if !strings.Contains(logs.String(), "re-cloning") {
		t.Fatalf("expected a re-clone, logs:\n%s", logs.String())
	}
	if src.gen.name == genBefore {
		t.Fatal("store directory was not replaced")
	}
	mustRead(t, src, second, "big/unchanged.txt", "u\n")
	third := repo.Commit("third", map[string]string{"f": "3\n"})
	mustFetch(t, src, third)
	mustChanged(t, src, second, third, "f")
}
