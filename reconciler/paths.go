package reconciler

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// CleanPaths returns search paths as fs.FS paths: "models/", "./models"
// and "models" are the same directory; none means the whole repository.
// Malformed paths (absolute, leaving the repository) are kept as written,
// for checkPaths to report.
func CleanPaths(paths []string) []string {
	if len(paths) == 0 {
		return []string{"."}
	}
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		if c := path.Clean(strings.TrimSpace(p)); fs.ValidPath(c) {
			p = c
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// checkPaths reports a search path that is malformed or names no
// directory of the tree.
func checkPaths(tree fs.FS, paths []string) error {
	for _, p := range paths {
		if !fs.ValidPath(p) {
			return fmt.Errorf("paths: %q must be a directory inside the repository (relative, without ..)", p)
		}
		st, err := fs.Stat(tree, p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("paths: %q does not exist in the repository", p)
		case err != nil:
			return fmt.Errorf("paths: %w", err)
		case !st.IsDir():
			return fmt.Errorf("paths: %q is a file; it must be a directory", p)
		}
	}
	return nil
}
