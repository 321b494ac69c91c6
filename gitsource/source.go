package gitsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/go-git/go-git/v5/storage/memory"
)

const remoteName = "origin"

// flakyBeforeReclone is how many consecutive mid-transfer failures make
// Fetch suspect its local shallow state and re-clone.
const flakyBeforeReclone = 3

// Revision describes a fetched commit.
type Revision struct {
	// SHA is the full hex commit id.
	SHA string
	// Time is the committer time.
	Time time.Time
	// Message is the full commit message.
	Message string
	// Author is "Name <email>".
	Author string
}

// Source tracks one branch of one remote and keeps its fetched commits in an
// on-disk object store. Its methods are safe for concurrent use.
type Source struct {
	cfg       Config
	remote    *remote
	log       *slog.Logger
	branchRef plumbing.ReferenceName
	trackRef  plumbing.ReferenceName
	refspec   config.RefSpec

	// fetchSem (capacity 1) serialises everything that writes the store:
	// fetches, re-clones and compactions. The holder owns the fields below
	// and may read gen without mu.
	fetchSem chan struct{}
	retired  *generation     // previous store dir, removed at the next swap
	keep     []plumbing.Hash // kept revisions, oldest first
	fetches  int             // fetches since the store was last rewritten
	flaky    int             // consecutive fetches broken mid-transfer
	baseSize int64           // store size right after it was last rewritten

	// mu guards gen and head and every read through gen.r. gen is only
	// replaced while holding both fetchSem and mu.
	mu   sync.Mutex
	gen  *generation
	head *Revision
}

// New prepares a Source for cfg, opening (or creating) its store under
// cfg.CacheDir. It does not touch the network. A nil log uses slog.Default.
func New(cfg Config, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.withDefaults()
	r, err := newRemote(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("repo %s: %w", cfg.Name, err)
	}
	s := &Source{
		cfg:       cfg,
		remote:    r,
		log:       log,
		branchRef: plumbing.NewBranchReferenceName(cfg.Branch),
		trackRef:  plumbing.NewRemoteReferenceName(remoteName, cfg.Branch),
		fetchSem:  make(chan struct{}, 1),
	}
	s.refspec = config.RefSpec(fmt.Sprintf("+%s:%s", s.branchRef, s.trackRef))
	if err := s.openStore(); err != nil {
		return nil, fmt.Errorf("repo %s: open store %s: %w", cfg.Name, cfg.CacheDir, err)
	}
	return s, nil
}

// Name returns Config.Name.
func (s *Source) Name() string { return s.cfg.Name }

// Branch returns the tracked branch.
func (s *Source) Branch() string { return s.cfg.Branch }

// URL returns the remote URL with credentials removed.
func (s *Source) URL() string { return s.remote.display }

// Current returns the most recently fetched revision, which may come from a
// previous run of the process (the store persists). ok is false before the
// first successful fetch into an empty store.
func (s *Source) Current() (rev Revision, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.head == nil {
		return Revision{}, false
	}
	return *s.head, true
}

// Head asks the remote for the branch head without fetching objects (the
// ls-remote handshake). It is cheap enough to poll every second.
func (s *Source) Head(ctx context.Context) (string, error) {
	type result struct {
		sha string
		err error
	}
	// go-git does not bound every dial by ctx; run it aside so the caller
	// is released as soon as ctx ends. The goroutine only touches memory.
	ch := make(chan result, 1)
	go func() {
		sha, err := s.lsRemote(ctx)
		ch <- result{sha, err}
	}()
	select {
	case <-ctx.Done():
		return "", s.fail("ls-remote", ctx.Err())
	case r := <-ch:
		return r.sha, r.err
	}
}

func (s *Source) lsRemote(ctx context.Context) (string, error) {
	rem := git.NewRemote(memory.NewStorage(), s.remoteConfig())
	refs, err := rem.ListContext(ctx, &git.ListOptions{
		Auth:            s.remote.auth,
		CABundle:        s.remote.caBundle,
		InsecureSkipTLS: s.remote.insecure,
	})
	if err != nil {
		return "", s.fail("ls-remote", s.remote.explainMissing(err))
	}
	for _, ref := range refs {
		if ref.Name() == s.branchRef && ref.Type() == plumbing.HashReference {
			return ref.Hash().String(), nil
		}
	}
	return "", s.fail("ls-remote", &BranchNotFoundError{Branch: s.cfg.Branch})
}

func (s *Source) remoteConfig() *config.RemoteConfig {
	return &config.RemoteConfig{
		Name:  remoteName,
		URLs:  []string{s.remote.url},
		Fetch: []config.RefSpec{s.refspec},
	}
}

// fail wraps err with the operation and the redacted URL, in this package's
// vocabulary, with secrets removed from the message.
func (s *Source) fail(op string, err error) error {
	return s.remote.wrap(fmt.Errorf("%s %s: %w", op, s.remote.display, classify(s.cfg.Branch, err)))
}

// Fetch makes the branch head's commit and tree available locally with a
// shallow (depth 1), single-branch fetch and returns it. If the incremental
// fetch fails in a way a fresh clone would fix, it re-clones (see the package
// documentation).
func (s *Source) Fetch(ctx context.Context) (Revision, error) {
	return runLocked(ctx, s, "fetch", s.fetchLocked)
}

// runLocked runs fn holding fetchSem, which serialises every write to the
// store. As in Head, fn runs aside so ctx always releases the caller; the
// semaphore is held until fn really ended.
func runLocked[T any](ctx context.Context, s *Source, op string, fn func(context.Context) (T, error)) (T, error) {
	var zero T
	select {
	case s.fetchSem <- struct{}{}:
	case <-ctx.Done():
		return zero, s.fail(op, ctx.Err())
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		defer func() { <-s.fetchSem }()
		v, err := fn(ctx)
		ch <- result{v, err}
	}()
	select {
	case <-ctx.Done():
		return zero, s.fail(op, ctx.Err())
	case r := <-ch:
		return r.v, r.err
	}
}

func (s *Source) fetchLocked(ctx context.Context) (Revision, error) {
	head, err := s.fetchInto(ctx, s.gen.w, s.branchTarget())
	if err != nil {
		kind := classifyFetchFailure(err)
		if kind == failFlaky {
			s.flaky++
		}
		if kind == failRemote || (kind == failFlaky && s.flaky < flakyBeforeReclone) {
			return Revision{}, s.fail("fetch", err)
		}
	}
	switch {
	case err != nil:
		s.log.Warn("incremental fetch failed; re-cloning", "repo", s.cfg.Name,
			"err", s.remote.redact(err.Error()))
		s.flaky = 0 // one re-clone per streak, even if it fails too
		head, err = s.reclone(ctx)
	default:
		if verr := verifyComplete(s.gen.w, head); verr != nil {
			s.log.Warn("fetched revision is incomplete; re-cloning", "repo", s.cfg.Name,
				"sha", head.String(), "err", verr)
			head, err = s.reclone(ctx)
		}
	}
	if err != nil {
		return Revision{}, s.fail("fetch", err)
	}
	rev, err := commitRevision(s.gen.w, head)
	if err != nil {
		return Revision{}, s.fail("fetch", err)
	}
	s.flaky = 0
	s.remember(head)
	s.publish(&rev)
	s.maybeCompact()
	return rev, nil
}

// fetchTarget is what one fetch asks for: a remote ref, the local ref it
// is stored as, and the error reported when the remote lacks it.
type fetchTarget struct {
	remote, local plumbing.ReferenceName
	missing       error
}

func (s *Source) branchTarget() fetchTarget {
	return fetchTarget{remote: s.branchRef, local: s.trackRef,
		missing: &BranchNotFoundError{Branch: s.cfg.Branch}}
}

// fetchInto runs one depth-1 fetch of target into st and returns the commit
// the local ref points at afterwards.
func (s *Source) fetchInto(ctx context.Context, st *filesystem.Storage, target fetchTarget) (plumbing.Hash, error) {
	spec := config.RefSpec(fmt.Sprintf("+%s:%s", target.remote, target.local))
	rem := git.NewRemote(st, s.remoteConfig())
	err := rem.FetchContext(ctx, &git.FetchOptions{
		RemoteName:      remoteName,
		RefSpecs:        []config.RefSpec{spec},
		Depth:           1,
		Auth:            s.remote.auth,
		Tags:            git.NoTags,
		Force:           true,
		CABundle:        s.remote.caBundle,
		InsecureSkipTLS: s.remote.insecure,
	})
	switch {
	case err == nil, errors.Is(err, git.NoErrAlreadyUpToDate):
	case errors.Is(err, transport.ErrEmptyRemoteRepository), errors.Is(err, git.NoMatchingRefSpecError{}):
		return plumbing.ZeroHash, target.missing
	default:
		return plumbing.ZeroHash, classify(s.cfg.Branch, err)
	}
	ref, err := st.Reference(target.local)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("read %s: %w", target.local, err)
	}
	return ref.Hash(), nil
}

// publish makes the store's new packs visible to readers and records rev as
// the current head.
func (s *Source) publish(rev *Revision) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reindexLocked()
	s.head = rev
}

// reindexLocked makes the store's new packs visible to readers; s.mu is
// held.
func (s *Source) reindexLocked() {
	s.gen.r.Reindex()
	warmIndex(s.gen.r)
}

func commitRevision(st *filesystem.Storage, h plumbing.Hash) (Revision, error) {
	c, err := object.GetCommit(st, h)
	if err != nil {
		return Revision{}, fmt.Errorf("read commit %s: %w", h, err)
	}
	return Revision{
		SHA:     c.Hash.String(),
		Time:    c.Committer.When,
		Message: strings.TrimRight(c.Message, "\n"),
		Author:  fmt.Sprintf("%s <%s>", c.Author.Name, c.Author.Email),
	}, nil
}

func parseSHA(sha string) (plumbing.Hash, error) {
	if len(sha) != 40 || !plumbing.IsHash(sha) {
		return plumbing.ZeroHash, fmt.Errorf("invalid commit sha %q", sha)
	}
	return plumbing.NewHash(sha), nil
}
