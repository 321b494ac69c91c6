package gitsource

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/fstest"

	"merlin.dev/merlin/internal/gittest"
)

func TestTreeFS(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	sha := repo.Commit("tree", map[string]string{
		"merlin.yaml":             "models: [m]\n",
		"models/m/serve.sh":       "+x:#!/bin/sh\necho hi\n",
		"models/m/model/w.bin":    "weights",
		"models/m/model/deep/x.y": "deep",
		"README.md":               "readme\n",
	})
	src, _ := newSource(t, repo.Bare, nil)
	mustFetch(t, src, sha)
	// A symlink to a file and one to a directory, both inside the tree.
	symlink := func(name, target string) {
		if err := os.Symlink(target, filepath.Join(repo.Work, name)); err != nil {
			t.Fatal(err)
		}
	}
	symlink("models/m/latest", "model/w.bin")
	symlink("models/alias", "m/model")
	withLinks := repo.Commit("links", nil)
	mustFetch(t, src, withLinks)
	// Broken ones: escaping the tree and looping. fstest (like os.DirFS)
	// cannot open those, so they come in a later commit.
	symlink("models/m/escape", "../../../etc/passwd")
	symlink("models/m/selfloop", "selfloop")
	sha2 := repo.Commit("broken links", nil)
	mustFetch(t, src, sha2)

	fsys, err := src.Tree(withLinks)
	if err != nil {
		t.Fatal(err)
	}
	if err := fstest.TestFS(fsys, "merlin.yaml", "README.md", "models/m/serve.sh",
		"models/m/model/w.bin", "models/m/model/deep/x.y", "models/m/latest"); err != nil {
		t.Fatal(err)
	}
	if fsys, err = src.Tree(sha2); err != nil {
		t.Fatal(err)
	}

	fi, err := fs.Stat(fsys, "models/m/serve.sh")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o755 || fi.Size() != int64(len("#!/bin/sh\necho hi\n")) {
		t.Fatalf("serve.sh mode %v size %d, want -rwxr-xr-x and its length", fi.Mode(), fi.Size())
	}
	if fi, _ := fs.Stat(fsys, "README.md"); fi.Mode() != 0o644 {
		t.Fatalf("README.md mode %v", fi.Mode())
	}
	if fi, _ := fs.Stat(fsys, "models"); !fi.IsDir() {
		t.Fatalf("models is not a dir: %v", fi.Mode())
	}

	// Symlinks: followed inside the tree, visible via Lstat/ReadLink.
	if b, err := fs.ReadFile(fsys, "models/m/latest"); err != nil || string(b) != "weights" {
		t.Fatalf("read through symlink = %q, %v", b, err)
	}
	if b, err := fs.ReadFile(fsys, "models/alias/deep/x.y"); err != nil || string(b) != "deep" {
		t.Fatalf("read through dir symlink = %q, %v", b, err)
	}
	if fi, err := fs.Lstat(fsys, "models/m/latest"); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("Lstat(latest) = %v, %v", fi, err)
	}
	if target, err := fs.ReadLink(fsys, "models/m/latest"); err != nil || target != "model/w.bin" {
		t.Fatalf("ReadLink = %q, %v", target, err)
	}
	for _, bad := range []string{"models/m/escape", "models/m/selfloop", "missing", "README.md/x"} {
		if _, err := fsys.Open(bad); err == nil {
			t.Errorf("Open(%s) succeeded", bad)
		}
	}
	if _, err := fsys.Open("missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(missing) = %v, want ErrNotExist", err)
	}
	if _, err := fsys.Open("/abs"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Open(/abs) = %v, want ErrInvalid", err)
	}

	var walked []string
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			walked = append(walked, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"README.md", "merlin.yaml", "models/alias", "models/m/escape", "models/m/latest",
		"models/m/model/deep/x.y", "models/m/model/w.bin", "models/m/selfloop", "models/m/serve.sh"}
	if !slices.Equal(walked, want) {
		t.Fatalf("WalkDir = %q, want %q", walked, want)
	}

	// fs.Sub gives the model directory view the daemon will use.
	sub, err := fs.Sub(fsys, "models/m")
	if err != nil {
		t.Fatal(err)
	}
	f, err := sub.Open("model/w.bin")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(f)
	if err != nil || string(b) != "weights" {
		t.Fatalf("sub read = %q, %v", b, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestTreeFSLargeBlob reads a blob above the in-memory threshold, which go-git
// streams from the pack.
func TestTreeFSLargeBlob(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	big := make([]byte, 3*largeObjectThreshold)
	for i := range big {
		big[i] = byte(i * 7 % 251)
	}
	sha := repo.Commit("big", map[string]string{"model.bin": string(big)})
	src, _ := newSource(t, repo.Bare, nil)
	mustFetch(t, src, sha)
	fsys, err := src.Tree(sha)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsys.Open("model.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, big) {
		t.Fatalf("large blob differs (len %d, want %d)", len(got), len(big))
	}
}
