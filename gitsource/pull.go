package gitsource

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// pullPrefix holds the local refs of fetched pull request heads.
const pullPrefix = "refs/merlin/pull/"

// ErrPullNotFound matches (errors.Is) the error returned when a pull
// request's head ref does not exist on the remote.
var ErrPullNotFound = errors.New("pull request head not found on remote")

// PullNotFoundError reports that refs/pull/<N>/head is missing on the
// remote; it matches ErrPullNotFound.
type PullNotFoundError struct {
	N int
}

func (e *PullNotFoundError) Error() string {
	return fmt.Sprintf("%s not found on remote (the pull request may be closed, or the remote is not GitHub)",
		remotePullRef(e.N))
}

// Is reports whether target is ErrPullNotFound.
func (e *PullNotFoundError) Is(target error) bool { return target == ErrPullNotFound }

func remotePullRef(n int) plumbing.ReferenceName {
	return plumbing.ReferenceName(fmt.Sprintf("refs/pull/%d/head", n))
}

func localPullRef(n int) plumbing.ReferenceName {
	return plumbing.ReferenceName(pullPrefix + strconv.Itoa(n))
}

// FetchPull fetches pull request n's head, refs/pull/<n>/head of the
// watched repository (GitHub keeps it for forks too), into the local
// repository as refs/merlin/pull/<n> and returns its commit SHA. The
// branch's revision (Current) is not changed; Tree(sha) then reads the
// pull request's files.
//
// Like Fetch it is a shallow (depth 1) fetch, serialised with Fetch and
// the store's compactions, which keep fetched pull request heads until
// ForgetPull.
func (s *Source) FetchPull(ctx context.Context, n int) (string, error) {
	op := fmt.Sprintf("fetch pull %d", n)
	if n < 1 {
		return "", fmt.Errorf("%s: invalid pull request number", op)
	}
	return runLocked(ctx, s, op, func(ctx context.Context) (string, error) {
		return s.fetchPullLocked(ctx, op, n)
	})
}

func (s *Source) fetchPullLocked(ctx context.Context, op string, n int) (string, error) {
	local := localPullRef(n)
	h, err := s.fetchInto(ctx, s.gen.w, fetchTarget{
		remote: remotePullRef(n), local: local, missing: &PullNotFoundError{N: n},
	})
	if err == nil {
		if err = verifyComplete(s.gen.w, h); err != nil {
			// Drop the ref so the objects are not taken for fetched.
			_ = s.gen.w.RemoveReference(local)
			err = fmt.Errorf("fetched %s is incomplete: %w", remotePullRef(n), err)
		}
	}
	if err != nil {
		return "", s.fail(op, err)
	}
	s.mu.Lock()
	s.reindexLocked()
	s.mu.Unlock()
	return h.String(), nil
}

// ForgetPull deletes the local ref of pull request n (the pull request
// closed), so its objects can be collected.
func (s *Source) ForgetPull(n int) error {
	if n < 1 {
		return fmt.Errorf("forget pull %d: invalid pull request number", n)
	}
	s.fetchSem <- struct{}{}
	defer func() { <-s.fetchSem }()
	if err := s.gen.w.RemoveReference(localPullRef(n)); err != nil {
		return fmt.Errorf("forget pull %d: %w", n, err)
	}
	return nil
}

// pullHeads returns the pull request refs in st by commit.
func pullHeads(st *filesystem.Storage) (map[plumbing.Hash][]plumbing.ReferenceName, []plumbing.Hash, error) {
	iter, err := st.IterReferences()
	if err != nil {
		return nil, nil, err
	}
	refs := map[plumbing.Hash][]plumbing.ReferenceName{}
	var commits []plumbing.Hash
	err = iter.ForEach(func(ref *plumbing.Reference) error {
		if ref.Type() != plumbing.HashReference || !strings.HasPrefix(ref.Name().String(), pullPrefix) {
			return nil
		}
		if _, ok := refs[ref.Hash()]; !ok {
			commits = append(commits, ref.Hash())
		}
		refs[ref.Hash()] = append(refs[ref.Hash()], ref.Name())
		return nil
	})
	return refs, commits, err
}

// carryPulls copies the fetched pull request heads from the current store
// into ng with their refs (on compaction and re-clone).
func (s *Source) carryPulls(ng *generation) error {
	refs, commits, err := pullHeads(s.gen.w)
	if err != nil || len(commits) == 0 {
		return err
	}
	_, err = s.copyRevisions(s.gen.w, ng, commits, func(h plumbing.Hash) []plumbing.ReferenceName { return refs[h] })
	return err
}

// keepPulls is carryPulls for a store swap, which goes on without them if
// they cannot be copied (FetchPull fetches them again).
func (s *Source) keepPulls(ng *generation) {
	if err := s.carryPulls(ng); err != nil {
		s.log.Warn("pull request heads lost in store rewrite; fetch them again",
			"repo", s.cfg.Name, "err", err)
	}
}
