package gitsource

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// maxLinkHops bounds symlink resolution inside a tree.
const maxLinkHops = 40

// maxLinkSize bounds how much of a symlink blob is read as its target.
const maxLinkSize = 4096

// Tree returns the repository's files at a fetched commit as an fs.FS read
// straight from the object store (no checkout). The result also implements
// fs.ReadDirFS, fs.ReadFileFS, fs.StatFS and fs.ReadLinkFS.
//
// Modes: directories are fs.ModeDir|0755, files 0644, executables 0755,
// symlinks fs.ModeSymlink (Open and Stat follow links that stay inside the
// tree), submodules fs.ModeIrregular with no content. ModTime is the commit
// time for every entry.
//
// Each operation reads from the current store, so the FS keeps working after
// compactions as long as the revision is kept; once it is dropped operations
// fail with an error matching ErrRevisionNotFound.
func (s *Source) Tree(sha string) (fs.FS, error) {
	h, err := parseSHA(sha)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := object.GetCommit(s.gen.r, h)
	if err != nil {
		return nil, notFetched(sha, err)
	}
	return &treeFS{src: s, sha: sha, root: c.TreeHash, mtime: c.Committer.When}, nil
}

func notFetched(sha string, err error) error {
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		return fmt.Errorf("revision %s: %w", sha, ErrRevisionNotFound)
	}
	return fmt.Errorf("revision %s: %w", sha, err)
}

type treeFS struct {
	src   *Source
	sha   string
	root  plumbing.Hash
	mtime time.Time
}

var (
	_ fs.ReadDirFS   = (*treeFS)(nil)
	_ fs.ReadFileFS  = (*treeFS)(nil)
	_ fs.StatFS      = (*treeFS)(nil)
	_ fs.ReadLinkFS  = (*treeFS)(nil)
	_ fs.ReadDirFile = (*dirFile)(nil)
)

// node is a resolved tree entry.
type node struct {
	name string // base name; "." for the root
	mode filemode.FileMode
	hash plumbing.Hash
}

// with runs fn with the store locked.
func (t *treeFS) with(fn func(st *filesystem.Storage) error) error {
	t.src.mu.Lock()
	defer t.src.mu.Unlock()
	return fn(t.src.gen.r)
}

// resolve walks name from the root. Symlinks in directory position are
// always followed; the final one only when follow is set.
func (t *treeFS) resolve(st *filesystem.Storage, op, name string, follow bool) (node, error) {
	if !fs.ValidPath(name) {
		return node{}, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	n, err := t.walk(st, name, follow, 0)
	if err != nil {
		return node{}, &fs.PathError{Op: op, Path: name, Err: err}
	}
	n.name = path.Base(name)
	return n, nil
}

func (t *treeFS) walk(st *filesystem.Storage, name string, follow bool, hops int) (node, error) {
	cur := node{name: ".", mode: filemode.Dir, hash: t.root}
	if name == "." {
		return cur, t.checkRoot(st)
	}
	parts := strings.Split(name, "/")
	for i, p := range parts {
		if cur.mode != filemode.Dir {
			return node{}, fs.ErrNotExist
		}
		tree, err := object.GetTree(st, cur.hash)
		if err != nil {
			return node{}, t.storeErr(err)
		}
		j := slices.IndexFunc(tree.Entries, func(e object.TreeEntry) bool { return e.Name == p })
		if j < 0 {
			return node{}, fs.ErrNotExist
		}
		e := tree.Entries[j]
		cur = node{name: p, mode: e.Mode, hash: e.Hash}
		last := i == len(parts)-1
		if cur.mode != filemode.Symlink || (last && !follow) {
			continue
		}
		if hops >= maxLinkHops {
			return node{}, errors.New("too many levels of symbolic links")
		}
		target, err := readLink(st, cur.hash)
		if err != nil {
			return node{}, t.storeErr(err)
		}
		next := path.Join(path.Join(parts[:i]...), target, path.Join(parts[i+1:]...))
		if path.IsAbs(target) || !fs.ValidPath(next) {
			return node{}, fs.ErrNotExist // points outside the tree
		}
		return t.walk(st, next, follow, hops+1)
	}
	return cur, nil
}

func (t *treeFS) checkRoot(st *filesystem.Storage) error {
	if err := st.HasEncodedObject(t.root); err != nil {
		return t.storeErr(err)
	}
	return nil
}

func (t *treeFS) storeErr(err error) error {
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		return notFetched(t.sha, err)
	}
	return err
}

func readLink(st *filesystem.Storage, h plumbing.Hash) (string, error) {
	b, err := readBlob(st, h, maxLinkSize)
	return string(b), err
}

func readBlob(st *filesystem.Storage, h plumbing.Hash, limit int64) ([]byte, error) {
	blob, err := object.GetBlob(st, h)
	if err != nil {
		return nil, err
	}
	r, err := blob.Reader()
	if err != nil {
		return nil, err
	}
	defer func() { _ = r.Close() }()
	if limit > 0 {
		return io.ReadAll(io.LimitReader(r, limit))
	}
	return io.ReadAll(r)
}

func (t *treeFS) info(st *filesystem.Storage, n node) (*fileInfo, error) {
	fi := &fileInfo{name: n.name, mtime: t.mtime}
	switch n.mode {
	case filemode.Dir:
		fi.mode = fs.ModeDir | 0o755
	case filemode.Submodule:
		fi.mode = fs.ModeIrregular
		return fi, nil
	case filemode.Symlink:
		fi.mode = fs.ModeSymlink | 0o777
	case filemode.Executable:
		fi.mode = 0o755
	default:
		fi.mode = 0o644
	}
	if n.mode != filemode.Dir {
		size, err := st.EncodedObjectSize(n.hash)
		if err != nil {
			return nil, t.storeErr(err)
		}
		fi.size = size
	}
	return fi, nil
}

// Open implements fs.FS.
func (t *treeFS) Open(name string) (fs.File, error) {
	var f fs.File
	err := t.with(func(st *filesystem.Storage) error {
		n, err := t.resolve(st, "open", name, true)
		if err != nil {
			return err
		}
		fi, err := t.info(st, n)
		if err != nil {
			return &fs.PathError{Op: "open", Path: name, Err: err}
		}
		switch n.mode {
		case filemode.Dir:
			f = &dirFile{fsys: t, path: name, hash: n.hash, info: fi}
		case filemode.Submodule:
			f = &blobFile{src: t.src, info: fi, r: io.NopCloser(strings.NewReader(""))}
		default:
			blob, err := object.GetBlob(st, n.hash)
			if err != nil {
				return &fs.PathError{Op: "open", Path: name, Err: t.storeErr(err)}
			}
			r, err := blob.Reader()
			if err != nil {
				return &fs.PathError{Op: "open", Path: name, Err: err}
			}
			f = &blobFile{src: t.src, info: fi, r: r}
		}
		return nil
	})
	return f, err
}

// Stat implements fs.StatFS.
func (t *treeFS) Stat(name string) (fs.FileInfo, error) { return t.stat("stat", name, true) }

// Lstat implements fs.ReadLinkFS.
func (t *treeFS) Lstat(name string) (fs.FileInfo, error) { return t.stat("lstat", name, false) }

func (t *treeFS) stat(op, name string, follow bool) (fs.FileInfo, error) {
	var fi *fileInfo
	err := t.with(func(st *filesystem.Storage) error {
		n, err := t.resolve(st, op, name, follow)
		if err != nil {
			return err
		}
		if fi, err = t.info(st, n); err != nil {
			return &fs.PathError{Op: op, Path: name, Err: err}
		}
		return nil
	})
	return fi, err
}

// ReadLink implements fs.ReadLinkFS.
func (t *treeFS) ReadLink(name string) (string, error) {
	var target string
	err := t.with(func(st *filesystem.Storage) error {
		n, err := t.resolve(st, "readlink", name, false)
		if err != nil {
			return err
		}
		if n.mode != filemode.Symlink {
			return &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
		}
		if target, err = readLink(st, n.hash); err != nil {
			return &fs.PathError{Op: "readlink", Path: name, Err: t.storeErr(err)}
		}
		return nil
	})
	return target, err
}

// ReadFile implements fs.ReadFileFS.
func (t *treeFS) ReadFile(name string) ([]byte, error) {
	var b []byte
	err := t.with(func(st *filesystem.Storage) error {
		n, err := t.resolve(st, "read", name, true)
		if err != nil {
			return err
		}
		switch n.mode {
		case filemode.Dir:
			return &fs.PathError{Op: "read", Path: name, Err: errors.New("is a directory")}
		case filemode.Submodule:
			b = []byte{}
			return nil
		}
		if b, err = readBlob(st, n.hash, 0); err != nil {
			return &fs.PathError{Op: "read", Path: name, Err: t.storeErr(err)}
		}
		return nil
	})
	return b, err
}

// ReadDir implements fs.ReadDirFS.
func (t *treeFS) ReadDir(name string) ([]fs.DirEntry, error) {
	var out []fs.DirEntry
	err := t.with(func(st *filesystem.Storage) error {
		n, err := t.resolve(st, "readdir", name, true)
		if err != nil {
			return err
		}
		if n.mode != filemode.Dir {
			return &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
		}
		out, err = t.entries(st, n.hash)
		if err != nil {
			return &fs.PathError{Op: "readdir", Path: name, Err: err}
		}
		return nil
	})
	return out, err
}

// entries lists a tree sorted by name (git orders directories as "name/").
func (t *treeFS) entries(st *filesystem.Storage, h plumbing.Hash) ([]fs.DirEntry, error) {
	tree, err := object.GetTree(st, h)
	if err != nil {
		return nil, t.storeErr(err)
	}
	out := make([]fs.DirEntry, 0, len(tree.Entries))
	for _, e := range tree.Entries {
		out = append(out, &dirEntry{fsys: t, n: node{name: e.Name, mode: e.Mode, hash: e.Hash}})
	}
	slices.SortFunc(out, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

type fileInfo struct {
	name  string
	size  int64
	mode  fs.FileMode
	mtime time.Time
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.size }
func (fi *fileInfo) Mode() fs.FileMode  { return fi.mode }
func (fi *fileInfo) ModTime() time.Time { return fi.mtime }
func (fi *fileInfo) IsDir() bool        { return fi.mode.IsDir() }
func (fi *fileInfo) Sys() any           { return nil }

type dirEntry struct {
	fsys *treeFS
	n    node
}

func (d *dirEntry) Name() string      { return d.n.name }
func (d *dirEntry) IsDir() bool       { return d.n.mode == filemode.Dir }
func (d *dirEntry) Type() fs.FileMode { return d.mode().Type() }
func (d *dirEntry) String() string    { return fs.FormatDirEntry(d) }

func (d *dirEntry) mode() fs.FileMode {
	switch d.n.mode {
	case filemode.Dir:
		return fs.ModeDir
	case filemode.Symlink:
		return fs.ModeSymlink
	case filemode.Submodule:
		return fs.ModeIrregular
	}
	return 0
}

// Info implements fs.DirEntry; like Lstat it does not follow symlinks.
func (d *dirEntry) Info() (fs.FileInfo, error) {
	var fi *fileInfo
	err := d.fsys.with(func(st *filesystem.Storage) error {
		var err error
		fi, err = d.fsys.info(st, d.n)
		return err
	})
	return fi, err
}

// blobFile streams a blob. Reads take the store lock: go-git's storage is
// not safe for concurrent use.
type blobFile struct {
	src  *Source
	info *fileInfo
	r    io.ReadCloser
}

func (f *blobFile) Stat() (fs.FileInfo, error) { return f.info, nil }

func (f *blobFile) Read(p []byte) (int, error) {
	f.src.mu.Lock()
	defer f.src.mu.Unlock()
	return f.r.Read(p)
}

func (f *blobFile) Close() error { return f.r.Close() }

type dirFile struct {
	fsys    *treeFS
	path    string
	hash    plumbing.Hash
	info    *fileInfo
	entries []fs.DirEntry
	loaded  bool
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return d.info, nil }

func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.path, Err: errors.New("is a directory")}
}

func (d *dirFile) Close() error { return nil }

// ReadDir implements fs.ReadDirFile.
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	if !d.loaded {
		err := d.fsys.with(func(st *filesystem.Storage) error {
			var err error
			d.entries, err = d.fsys.entries(st, d.hash)
			return err
		})
		if err != nil {
			return nil, &fs.PathError{Op: "readdir", Path: d.path, Err: err}
		}
		d.loaded = true
	}
	if n <= 0 {
		out := d.entries
		d.entries = nil
		return out, nil
	}
	if len(d.entries) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(d.entries))
	out := d.entries[:n:n]
	d.entries = d.entries[n:]
	return out, nil
}
