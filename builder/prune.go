package builder

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// PruneStats says what a Prune did to the bundle directory.
type PruneStats struct {
	Kept, Removed int
	// TempsRemoved counts abandoned build directories (a build cut off by
	// a crash leaves one behind).
	TempsRemoved int
	// BytesBefore and BytesAfter are the sizes of the files under the
	// directory before and after.
	BytesBefore, BytesAfter int64
}

// staleTemp is how old a .build-* directory must be before Prune takes it
// for abandoned: younger ones may belong to a build in progress.
const staleTemp = time.Hour

// Prune removes the bundles whose digest is not in keep, and build
// directories abandoned for more than an hour. Bundles are immutable and
// content-addressed, so a pruned digest is simply built again if a later
// commit needs it. The caller must not build concurrently with Prune (a
// bundle built meanwhile and not in keep would be removed).
func (b *Builder) Prune(ctx context.Context, keep map[string]bool) (PruneStats, error) {
	var st PruneStats
	entries, err := os.ReadDir(b.dir)
	if err != nil {
		return st, fmt.Errorf("prune bundles: %w", err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("prune bundles: %w", err)
		}
		if !e.IsDir() {
			continue
		}
		p := filepath.Join(b.dir, e.Name())
		size := dirBytes(p)
		st.BytesBefore += size
		remove := false
		switch {
		case strings.HasPrefix(e.Name(), ".build-"):
			info, err := e.Info()
			remove = err == nil && time.Since(info.ModTime()) > staleTemp
			if remove {
				st.TempsRemoved++
			}
		case strings.HasPrefix(e.Name(), "."):
		case !keep[e.Name()]:
			remove = true
			st.Removed++
		default:
			st.Kept++
		}
		if !remove {
			st.BytesAfter += size
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return st, fmt.Errorf("prune bundles: %w", err)
		}
	}
	return st, nil
}

// dirBytes is the size of the regular files under dir (0 when unreadable).
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
