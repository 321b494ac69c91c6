// Package builder turns a model's source into a servable unit: it hashes
// the model files and the settings that change how they are served into a
// content digest (the version ID is <model>-<digest8>), and materialises
// them as a bundle directory that model servers load. Bundles are
// content-addressed: a digest already built is never built again, so a
// commit that leaves a model untouched costs nothing.
package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	yaml "go.yaml.in/yaml/v3"

	"merlin.dev/merlin/manifest"
)

// Limits on a model directory.
const (
	MaxFiles = 10000
	MaxBytes = 4 << 30
)

// Builder writes bundles under a directory.
type Builder struct {
	dir string
}

// New returns a builder that keeps bundles in dir.
func New(dir string) (*Builder, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}
	return &Builder{dir: dir}, nil
}

// Result is a built model.
type Result struct {
	// Digest is the hex sha256 of the model files and serving settings.
	Digest string
	// Bundle is the directory holding the model files.
	Bundle string
	// Flavors are the MLflow flavors the model declares.
	Flavors []string
}

// Build hashes and bundles the model directory dir of fsys for model m.
// Problems with the model (no MLmodel, a flavor that does not match
// spec.type) are returned as a *manifest.Error positioned at
// spec.source.path.
func (b *Builder) Build(fsys fs.FS, dir string, m *manifest.Model) (Result, error) {
	files, err := list(fsys, dir)
	if err != nil {
		return Result{}, m.Errorf(sourceField(m), "%v", err)
	}
	var flavors []string
	if m.Spec.Type != manifest.TypeCustom {
		if flavors, err = checkMLmodel(fsys, dir, m.Spec.Type); err != nil {
			return Result{}, m.Errorf(sourceField(m), "%v", err)
		}
	}
	tmp, err := os.MkdirTemp(b.dir, ".build-*")
	if err != nil {
		return Result{}, fmt.Errorf("build %s: %w", m.Metadata.Name, err)
	}
	defer os.RemoveAll(tmp)
	// Model servers may run as another user (serving/local): a bundle is
	// readable to everyone and writable only by the daemon.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return Result{}, fmt.Errorf("build %s: %w", m.Metadata.Name, err)
	}
	h := sha256.New()
	h.Write([]byte("merlin bundle v1\n"))
	for _, f := range files {
		if err := copyHashed(fsys, path.Join(dir, f), filepath.Join(tmp, filepath.FromSlash(f)), f, h); err != nil {
			return Result{}, fmt.Errorf("build %s: %w", m.Metadata.Name, err)
		}
	}
	h.Write(Settings(m))
	digest := hex.EncodeToString(h.Sum(nil))
	bundle := filepath.Join(b.dir, digest)
	if _, err := os.Stat(bundle); err == nil {
		return Result{Digest: digest, Bundle: bundle, Flavors: flavors}, nil
	}
	if err := os.Rename(tmp, bundle); err != nil && !errors.Is(err, fs.ErrExist) {
		if _, statErr := os.Stat(bundle); statErr != nil {
			return Result{}, fmt.Errorf("build %s: %w", m.Metadata.Name, err)
		}
	}
	return Result{Digest: digest, Bundle: bundle, Flavors: flavors}, nil
}

// sourceField is the manifest field that names where m's files come from,
// where an error in them is positioned.
func sourceField(m *manifest.Model) string {
	switch {
	case m.Spec.Source.MLflow != "":
		return "spec.source.mlflow"
	case m.Spec.Source.URI != "":
		return "spec.source.uri"
	}
	return "spec.source.path"
}

// Bundle returns the directory of a built digest, if it exists.
func (b *Builder) Bundle(digest string) (string, bool) {
	p := filepath.Join(b.dir, digest)
	_, err := os.Stat(p)
	return p, err == nil
}

// Settings encodes the manifest fields that change what a model server
// does with the same files. They are part of the digest, and a change to
// them alone means a new version.
func Settings(m *manifest.Model) []byte {
	b, _ := json.Marshal(struct {
		Type     manifest.ModelType
		Protocol manifest.Protocol
		Image    string
		Env      []manifest.EnvVar
	}{m.Spec.Type, m.Spec.Protocol, m.Spec.Image, m.Spec.Env})
	return b
}

// list returns the regular files under dir, slash-separated and relative
// to it, in sorted order.
func list(fsys fs.FS, dir string) ([]string, error) {
	var files []string
	var total int64
	err := fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file (symlinks and devices are not bundled)", p)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if total += info.Size(); total > MaxBytes || len(files) >= MaxFiles {
			return fmt.Errorf("model directory %s is larger than %d files or %d bytes", dir, MaxFiles, int64(MaxBytes))
		}
		rel := strings.TrimPrefix(p, dir+"/")
		files = append(files, rel)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	return files, nil
}

func copyHashed(fsys fs.FS, src, dst, rel string, h hash.Hash) error {
	in, err := fsys.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if info.Mode()&0o111 != 0 {
		mode = 0o755
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	fh := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, fh), in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	fmt.Fprintf(h, "%s\x00%o\x00%x\n", rel, mode, fh.Sum(nil))
	return nil
}

// flavorFor maps model types to the MLflow flavor that serves them.
var flavorFor = map[manifest.ModelType][]string{
	manifest.TypeSKLearn:    {"sklearn"},
	manifest.TypeXGBoost:    {"xgboost"},
	manifest.TypePyTorch:    {"pytorch"},
	manifest.TypeTensorFlow: {"tensorflow", "keras"},
	manifest.TypeONNX:       {"onnx"},
	manifest.TypePyFunc:     {"python_function"},
}

// checkMLmodel reads dir/MLmodel and checks that it declares the flavor
// the model type needs.
func checkMLmodel(fsys fs.FS, dir string, t manifest.ModelType) ([]string, error) {
	data, err := fs.ReadFile(fsys, path.Join(dir, "MLmodel"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no MLmodel file in %s: Merlin serves MLflow model directories (MLmodel plus the model files)", dir)
	}
	if err != nil {
		return nil, err
	}
	var doc struct {
		Flavors map[string]yaml.Node `yaml:"flavors"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s/MLmodel is not valid YAML: %w", dir, err)
	}
	flavors := make([]string, 0, len(doc.Flavors))
	for f := range doc.Flavors {
		flavors = append(flavors, f)
	}
	slices.Sort(flavors)
	for _, want := range flavorFor[t] {
		if doc.Flavors[want].Kind != 0 {
			return flavors, nil
		}
	}
	return nil, fmt.Errorf("%s/MLmodel has flavors [%s]; type %s needs the %s flavor", dir, strings.Join(flavors, " "), t, strings.Join(flavorFor[t], " or "))
}
