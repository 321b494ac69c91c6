package manifest

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// CheckSources checks that every source.path in the file names a directory
// inside fsys. dir is the fsys path of the directory holding the file;
// paths must not leave fsys (a repository must not reach outside itself).
func (f *File) CheckSources(fsys fs.FS, dir string) {
	for _, m := range f.Models {
		if !m.Set("spec.source.path") || m.hasError("spec.source.path") {
			continue
		}
		p, ok := SourceDir(dir, m.Spec.Source.Path)
		if !ok {
			m.addError(m.Errorf("spec.source.path", "%q points outside the repository", m.Spec.Source.Path))
			continue
		}
		switch st, err := fs.Stat(fsys, p); {
		case errors.Is(err, fs.ErrNotExist):
			m.addError(m.Errorf("spec.source.path", "%q does not exist", m.Spec.Source.Path))
		case err != nil:
			m.addError(m.Errorf("spec.source.path", "%q: %v", m.Spec.Source.Path, err))
		case !st.IsDir():
			m.addError(m.Errorf("spec.source.path", "%q is a file; it must be a model directory (MLmodel and model files)", m.Spec.Source.Path))
		}
	}
}

// SourceDir joins a manifest's directory and its source.path into an fs.FS
// path, reporting false when the result leaves the root.
func SourceDir(dir, source string) (string, bool) {
	p := path.Join(dir, source)
	if p == ".." || strings.HasPrefix(p, "../") || path.IsAbs(p) {
		return "", false
	}
	return p, true
}

func (m *Model) hasError(field string) bool {
	for _, e := range m.Errors {
		if e.Field == field {
			return true
		}
	}
	return false
}

func (m *Model) addError(e *Error) {
	m.Errors = append(m.Errors, e)
	m.Errors.Sort()
}

// CheckUnique reports models whose name was already declared earlier in
// files (a repository's model names are unique across its merlin.yamls).
// The first declaration wins; later ones get the error.
func CheckUnique(files []*File) {
	first := map[string]*Model{}
	for _, f := range files {
		for _, m := range f.Models {
			name := m.Metadata.Name
			if name == "" {
				continue
			}
			if prev, dup := first[name]; dup {
				p := prev.Pos("metadata.name")
				m.addError(m.Errorf("metadata.name", "duplicate model name %q (first declared at %s:%d:%d)", name, prev.File, p.Line, p.Column))
				continue
			}
			first[name] = m
		}
	}
}

// Load finds every merlin.yaml under roots (directories in fsys; "." for
// all of it), parses and checks them, and returns the files in path order.
// Error names are fsys paths, i.e. repository-relative. The returned error
// is only for I/O that fails for the whole tree; manifest problems, and a
// manifest that cannot be read (a dangling symlink, one pointing outside
// the repository), are in the files, so that one bad file stops only the
// models it declares.
func Load(fsys fs.FS, roots ...string) ([]*File, error) {
	if len(roots) == 0 {
		roots = []string{"."}
	}
	var files []*File
	seen := map[string]bool{}
	for _, root := range roots {
		names, err := Find(fsys, root)
		if err != nil {
			return nil, err
		}
		for _, name := range names {
			if seen[name] {
				continue
			}
			seen[name] = true
			f, err := ReadFile(fsys, name, name)
			if err != nil {
				e := unreadable(fsys, name, err)
				if e == nil {
					return nil, err
				}
				f = &File{Name: name, Errors: ErrorList{e}}
			}
			files = append(files, f)
		}
	}
	CheckUnique(files)
	return files, nil
}

// ReadFile parses one manifest from fsys and checks its source paths.
// display is the file's name in errors.
func ReadFile(fsys fs.FS, name, display string) (*File, error) {
	st, err := fs.Stat(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if st.Size() > MaxFileSize {
		return &File{Name: display, Errors: ErrorList{tooLarge(display)}}, nil
	}
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	f := Parse(display, data)
	f.CheckSources(fsys, path.Dir(name))
	return f, nil
}

// Find lists the merlin.yaml files under root in fsys, in lexical order,
// skipping hidden directories such as .git. A missing root yields none.
func Find(fsys fs.FS, root string) ([]string, error) {
	var names []string
	err := fs.WalkDir(fsys, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if d.IsDir() && p != root && strings.HasPrefix(d.Name(), ".") {
			return fs.SkipDir
		}
		if !d.IsDir() && d.Name() == FileName {
			names = append(names, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find manifests under %s: %w", root, err)
	}
	return names, nil
}

// unreadable is the file error for a manifest that cannot be read, or nil
// when err is not the file's fault (the tree itself cannot be read).
func unreadable(fsys fs.FS, name string, err error) *Error {
	fail := func(format string, args ...any) *Error {
		return &Error{File: name, Line: 1, Column: 1, Message: fmt.Sprintf(format, args...)}
	}
	if st, lerr := fs.Lstat(fsys, name); lerr == nil && st.Mode()&fs.ModeSymlink != 0 {
		target, rerr := fs.ReadLink(fsys, name)
		switch {
		case rerr != nil:
			return fail("cannot read the symlink: %v", rerr)
		case path.IsAbs(target):
			return fail("symlink to %q points outside the repository", target)
		}
		if _, ok := SourceDir(path.Dir(name), target); !ok {
			return fail("symlink to %q points outside the repository", target)
		}
		if errors.Is(err, fs.ErrNotExist) {
			return fail("symlink to %q: the target does not exist", target)
		}
		return fail("symlink to %q cannot be read: %v", target, errors.Unwrap(err))
	}
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrInvalid) || errors.Is(err, fs.ErrPermission) {
		return fail("cannot read: %v", err)
	}
	return nil
}
