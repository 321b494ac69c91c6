package gitsource

import (
	"context"
	"fmt"
	"slices"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// Changed returns the sorted, slash-separated paths of files that differ
// between two fetched commits: added, modified (content or mode) and
// deleted; a rename shows as its old and new path. from == "" means every
// path in to. If from is no longer in the store (dropped by compaction or a
// re-clone), Changed also returns every path in to; use ChangedFull to learn
// that this happened.
func (s *Source) Changed(ctx context.Context, from, to string) ([]string, error) {
	paths, _, err := s.ChangedFull(ctx, from, to)
	return paths, err
}

// ChangedFull is Changed that also reports full == true when the result is
// every path in to rather than a diff (from empty or no longer stored), in
// which case the caller should resynchronise everything: deletions since
// from are not listed.
func (s *Source) ChangedFull(ctx context.Context, from, to string) (paths []string, full bool, err error) {
	toHash, err := parseSHA(to)
	if err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.gen.r
	toTree, err := commitTree(st, toHash)
	if err != nil {
		return nil, false, notFetched(to, err)
	}
	if from == "" {
		paths, err = allPaths(ctx, st, toTree)
		return paths, true, err
	}
	fromHash, err := parseSHA(from)
	if err != nil {
		return nil, false, err
	}
	fromTree, err := commitTree(st, fromHash)
	if err != nil {
		s.log.Warn("previous revision not in store; reporting every path as changed",
			"repo", s.cfg.Name, "sha", from, "err", err)
		paths, err = allPaths(ctx, st, toTree)
		return paths, true, err
	}
	changes, err := object.DiffTreeWithOptions(ctx, fromTree, toTree, nil)
	if err != nil {
		return nil, false, fmt.Errorf("diff %s..%s: %w", from, to, err)
	}
	for _, c := range changes {
		for _, name := range []string{c.From.Name, c.To.Name} {
			if name != "" {
				paths = append(paths, name)
			}
		}
	}
	slices.Sort(paths)
	return slices.Compact(paths), false, nil
}

func commitTree(st *filesystem.Storage, h plumbing.Hash) (*object.Tree, error) {
	c, err := object.GetCommit(st, h)
	if err != nil {
		return nil, err
	}
	return object.GetTree(st, c.TreeHash)
}

// allPaths lists every non-directory entry of t (files, symlinks,
// submodules), sorted.
func allPaths(ctx context.Context, st *filesystem.Storage, t *object.Tree) ([]string, error) {
	var out []string
	var walk func(prefix string, t *object.Tree) error
	walk = func(prefix string, t *object.Tree) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		for _, e := range t.Entries {
			p := prefix + e.Name
			if e.Mode != filemode.Dir {
				out = append(out, p)
				continue
			}
			sub, err := object.GetTree(st, e.Hash)
			if err != nil {
				return fmt.Errorf("tree %s: %w", p, err)
			}
			if err := walk(p+"/", sub); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk("", t); err != nil {
		return nil, err
	}
	slices.Sort(out)
	return out, nil
}
