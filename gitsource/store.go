package gitsource

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

const (
	currentFile = "CURRENT"
	storePrefix = "store-"
	keepPrefix  = "refs/merlin/keep/"
	// Objects above this size are streamed from their pack instead of
	// being loaded into memory whole.
	largeObjectThreshold = 1 << 20
	writerCacheSize      = 8 * cache.MiByte
	readerCacheSize      = 16 * cache.MiByte
)

// generation is one store directory. go-git's filesystem storage is not safe
// for concurrent use, so the writer (fetches) and the readers (Tree,
// Changed) get separate instances over the same directory; readers pick up
// new packs through Reindex after each fetch.
type generation struct {
	name string
	dir  string
	w    *filesystem.Storage
	r    *filesystem.Storage
	// wcache is w's object cache.
	wcache cache.Object
}

func openGeneration(dir string) *generation {
	newStorage := func(c cache.Object) *filesystem.Storage {
		return filesystem.NewStorageWithOptions(osfs.New(dir), c,
			filesystem.Options{LargeObjectThreshold: largeObjectThreshold})
	}
	wc := cache.NewObjectLRU(writerCacheSize)
	g := &generation{name: filepath.Base(dir), dir: dir, w: newStorage(wc), r: newStorage(cache.NewObjectLRU(readerCacheSize)), wcache: wc}
	warmIndex(g.r)
	return g
}

// warmIndex loads the pack indexes now, while no pack is being written, so
// that readers never load them lazily in the middle of a fetch.
func warmIndex(st *filesystem.Storage) {
	_ = st.HasEncodedObject(plumbing.ZeroHash)
}

func (g *generation) remove() { _ = os.RemoveAll(g.dir) }

// openStore opens the store named by CacheDir/CURRENT, or creates one, and
// removes leftovers of earlier runs.
func (s *Source) openStore() error {
	if err := os.MkdirAll(s.cfg.CacheDir, 0o750); err != nil {
		return err
	}
	var g *generation
	if b, err := os.ReadFile(filepath.Join(s.cfg.CacheDir, currentFile)); err == nil {
		name := strings.TrimSpace(string(b))
		if _, err := os.Stat(filepath.Join(s.cfg.CacheDir, name, "config")); err == nil && strings.HasPrefix(name, storePrefix) {
			g = openGeneration(filepath.Join(s.cfg.CacheDir, name))
		}
	}
	if g == nil {
		var err error
		if g, err = s.createGeneration(); err != nil {
			return err
		}
		if err := writeCurrent(s.cfg.CacheDir, g.name); err != nil {
			g.remove()
			return err
		}
	}
	s.gen = g
	s.removeStale()
	s.loadState()
	s.baseSize = dirSize(g.dir)
	return nil
}

func (s *Source) createGeneration() (*generation, error) {
	// The cache dir may have been wiped under a running daemon.
	if err := os.MkdirAll(s.cfg.CacheDir, 0o750); err != nil {
		return nil, fmt.Errorf("create cache dir: %w", err)
	}
	dir, err := os.MkdirTemp(s.cfg.CacheDir, storePrefix)
	if err != nil {
		return nil, fmt.Errorf("create store dir: %w", err)
	}
	g := openGeneration(dir)
	if _, err := git.Init(g.w, nil); err != nil {
		g.remove()
		return nil, fmt.Errorf("init store %s: %w", dir, err)
	}
	return g, nil
}

// removeStale deletes store directories other than the current one (left by
// a crash during a swap, or by the previous run's grace generation).
func (s *Source) removeStale() {
	entries, err := os.ReadDir(s.cfg.CacheDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), storePrefix) && e.Name() != s.gen.name {
			_ = os.RemoveAll(filepath.Join(s.cfg.CacheDir, e.Name()))
		}
	}
}

// loadState restores the kept revisions and the current head from refs in
// the store, ignoring any whose objects are incomplete.
func (s *Source) loadState() {
	type kept struct {
		h    plumbing.Hash
		when int64
	}
	var ks []kept
	iter, err := s.gen.w.IterReferences()
	if err == nil {
		_ = iter.ForEach(func(ref *plumbing.Reference) error {
			if !strings.HasPrefix(ref.Name().String(), keepPrefix) {
				return nil
			}
			if c, err := object.GetCommit(s.gen.w, ref.Hash()); err == nil {
				ks = append(ks, kept{ref.Hash(), c.Committer.When.UnixNano()})
			}
			return nil
		})
	}
	slices.SortStableFunc(ks, func(a, b kept) int { return cmp.Compare(a.when, b.when) })
	for _, k := range ks {
		s.keep = append(s.keep, k.h)
	}
	ref, err := s.gen.w.Reference(s.trackRef)
	if err != nil || verifyComplete(s.gen.w, ref.Hash()) != nil {
		return
	}
	if rev, err := commitRevision(s.gen.w, ref.Hash()); err == nil {
		s.head = &rev
	}
}

// remember pins h as the newest kept revision and unpins the oldest ones
// beyond KeepRevisions (their objects go at the next compaction).
func (s *Source) remember(h plumbing.Hash) {
	s.keep = slices.DeleteFunc(s.keep, func(k plumbing.Hash) bool { return k == h })
	s.keep = append(s.keep, h)
	if err := s.gen.w.SetReference(plumbing.NewHashReference(keepRef(h), h)); err != nil {
		s.log.Warn("pin revision", "repo", s.cfg.Name, "sha", h.String(), "err", err)
	}
	for len(s.keep) > s.cfg.KeepRevisions {
		_ = s.gen.w.RemoveReference(keepRef(s.keep[0]))
		s.keep = s.keep[1:]
	}
}

func keepRefs(h plumbing.Hash) []plumbing.ReferenceName {
	return []plumbing.ReferenceName{keepRef(h)}
}

func keepRef(h plumbing.Hash) plumbing.ReferenceName {
	return plumbing.ReferenceName(keepPrefix + h.String())
}

// maybeCompact applies the growth policy after a successful fetch.
func (s *Source) maybeCompact() {
	s.fetches++
	size := dirSize(s.gen.dir)
	limit := max(s.cfg.MaxCacheBytes, 2*s.baseSize)
	if s.fetches < s.cfg.CompactEvery && size <= limit {
		return
	}
	if err := s.compact(); err != nil {
		s.fetches = 0 // try again after another CompactEvery fetches
		s.log.Warn("compact store", "repo", s.cfg.Name, "err", err)
		return
	}
	s.log.Info("compacted store", "repo", s.cfg.Name, "bytes_before", size,
		"bytes_after", s.baseSize, "revisions", len(s.keep))
}

// compact rewrites the store with only the objects of the kept revisions and
// of the fetched pull request heads.
func (s *Source) compact() error {
	head, err := s.gen.w.Reference(s.trackRef)
	if err != nil {
		return fmt.Errorf("read %s: %w", s.trackRef, err)
	}
	ng, err := s.createGeneration()
	if err != nil {
		return err
	}
	kept, err := s.copyRevisions(s.gen.w, ng, s.keep, keepRefs)
	if err == nil && !slices.Contains(kept, head.Hash()) {
		err = fmt.Errorf("head %s could not be copied", head.Hash())
	}
	if err == nil {
		err = ng.w.SetReference(plumbing.NewHashReference(s.trackRef, head.Hash()))
	}
	if err == nil {
		s.keepPulls(ng)
		err = s.swap(ng)
	}
	if err != nil {
		ng.remove()
		return err
	}
	s.keep = kept
	return nil
}

// reclone fetches the branch afresh into a new store, carries the kept
// revisions and pull request heads over where the old store can still
// supply them, and switches to it. It returns the new head.
func (s *Source) reclone(ctx context.Context) (plumbing.Hash, error) {
	ng, err := s.createGeneration()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	head, err := s.fetchInto(ctx, ng.w, s.branchTarget())
	if err == nil {
		err = verifyComplete(ng.w, head)
	}
	if err != nil {
		ng.remove()
		return plumbing.ZeroHash, fmt.Errorf("fresh clone: %w", err)
	}
	kept, err := s.copyRevisions(s.gen.w, ng, s.keep, keepRefs)
	if err != nil {
		s.log.Warn("earlier revisions lost in re-clone; next diff is a full resync",
			"repo", s.cfg.Name, "err", err)
		kept = nil
	}
	s.keepPulls(ng)
	if err := s.swap(ng); err != nil {
		ng.remove()
		return plumbing.ZeroHash, err
	}
	s.keep = kept
	s.log.Info("re-cloned store", "repo", s.cfg.Name, "sha", head.String(), "revisions_kept", len(kept))
	return head, nil
}

// copyRevisions copies the objects of commits (commit, trees, blobs; no
// history) from src into dst as one pack, points the refs pins names at
// them and marks them shallow. Commits whose objects src cannot supply are skipped. It returns the
// commits now present in dst, in the order given.
func (s *Source) copyRevisions(src storer.EncodedObjectStorer, dst *generation, commits []plumbing.Hash,
	pins func(plumbing.Hash) []plumbing.ReferenceName) ([]plumbing.Hash, error) {
	var (
		kept []plumbing.Hash
		objs []plumbing.Hash
		seen = map[plumbing.Hash]bool{}
	)
	for _, c := range commits {
		if verifyComplete(dst.w, c) == nil {
			kept = append(kept, c)
			continue
		}
		hs, err := reachable(src, c)
		if err != nil {
			s.log.Info("dropping revision from store", "repo", s.cfg.Name, "sha", c.String(), "err", err)
			continue
		}
		for _, h := range hs {
			if !seen[h] && dst.w.HasEncodedObject(h) != nil {
				seen[h] = true
				objs = append(objs, h)
			}
		}
		kept = append(kept, c)
	}
	if len(objs) > 0 {
		if err := writePack(src, dst.w, objs); err != nil {
			return nil, err
		}
	}
	shallow, err := dst.w.Shallow()
	if err != nil {
		return nil, fmt.Errorf("read shallow: %w", err)
	}
	for _, c := range kept {
		for _, name := range pins(c) {
			if err := dst.w.SetReference(plumbing.NewHashReference(name, c)); err != nil {
				return nil, fmt.Errorf("pin %s as %s: %w", c, name, err)
			}
		}
		if !slices.Contains(shallow, c) {
			shallow = append(shallow, c)
		}
	}
	if err := dst.w.SetShallow(shallow); err != nil {
		return nil, fmt.Errorf("write shallow: %w", err)
	}
	return kept, nil
}

func writePack(src storer.EncodedObjectStorer, dst *filesystem.Storage, objs []plumbing.Hash) error {
	w, err := dst.PackfileWriter()
	if err != nil {
		return fmt.Errorf("open pack: %w", err)
	}
	// Window 0: no delta search. Objects are streamed one at a time, so
	// memory stays bounded even for large blobs.
	if _, err := packfile.NewEncoder(w, src, false).Encode(objs, 0); err != nil {
		_ = w.Close()
		return fmt.Errorf("encode pack: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("write pack: %w", err)
	}
	return nil
}

// swap makes ng the current store. The previous store stays on disk until
// the next swap so readers holding streams into it can finish.
func (s *Source) swap(ng *generation) error {
	if err := writeCurrent(s.cfg.CacheDir, ng.name); err != nil {
		return err
	}
	s.mu.Lock()
	ng.r.Reindex() // its index was loaded before the packs were written
	warmIndex(ng.r)
	old := s.gen
	s.gen = ng
	s.mu.Unlock()
	if s.retired != nil {
		s.retired.remove()
	}
	s.retired = old
	s.fetches = 0
	s.baseSize = dirSize(ng.dir)
	return nil
}

func writeCurrent(dir, name string) error {
	tmp := filepath.Join(dir, currentFile+".tmp")
	if err := os.WriteFile(tmp, []byte(name+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", currentFile, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, currentFile)); err != nil {
		return fmt.Errorf("write %s: %w", currentFile, err)
	}
	return nil
}

// verifyComplete checks that commit h, all its trees and all its blobs are in
// st. go-git's shallow fetches can update a ref without delivering them.
func verifyComplete(st storer.EncodedObjectStorer, h plumbing.Hash) error {
	_, err := reachable(st, h)
	return err
}

// reachable lists commit h and every tree and blob of its tree (not its
// history), failing if any of them is missing from st.
func reachable(st storer.EncodedObjectStorer, h plumbing.Hash) ([]plumbing.Hash, error) {
	c, err := object.GetCommit(st, h)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", h, err)
	}
	out := []plumbing.Hash{h}
	seen := map[plumbing.Hash]bool{}
	if err := collectTree(st, c.TreeHash, seen, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func collectTree(st storer.EncodedObjectStorer, h plumbing.Hash, seen map[plumbing.Hash]bool, out *[]plumbing.Hash) error {
	if seen[h] {
		return nil
	}
	t, err := object.GetTree(st, h)
	if err != nil {
		return fmt.Errorf("tree %s: %w", h, err)
	}
	seen[h] = true
	*out = append(*out, h)
	for _, e := range t.Entries {
		switch {
		case e.Mode == filemode.Dir:
			if err := collectTree(st, e.Hash, seen, out); err != nil {
				return err
			}
		case e.Mode == filemode.Submodule, seen[e.Hash]:
		default:
			if err := st.HasEncodedObject(e.Hash); err != nil {
				return fmt.Errorf("blob %s (%s): %w", e.Hash, e.Name, err)
			}
			seen[e.Hash] = true
			*out = append(*out, e.Hash)
		}
	}
	return nil
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if info, err := d.Info(); err == nil && !d.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}
