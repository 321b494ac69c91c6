package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"path/filepath"

	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving"
)

// Annotations Merlin puts on every deployed version: where it came from.
const (
	AnnotationRepo     = "merlin.dev/git-repo"
	AnnotationCommit   = "merlin.dev/git-commit"
	AnnotationManifest = "merlin.dev/manifest"
)

// Origin is where a version was built from: the repository URL and the
// commit. The zero Origin (merlin render, offline) annotates the manifest
// path only.
type Origin struct {
	Repo, Commit string
}

// SourceDir returns the model directory of a source.path model, relative
// to the root of the file system its manifest is read from; manifestDir is
// the manifest's directory in it ("." when the root is that directory).
func SourceDir(m *manifest.Model, manifestDir string) (string, error) {
	if m.Spec.Source.Path == "" {
		return "", m.Errorf("spec.source", "not a source.path model")
	}
	dir, ok := manifest.SourceDir(manifestDir, m.Spec.Source.Path)
	if !ok {
		return "", m.Errorf("spec.source.path", "%q points outside the repository", m.Spec.Source.Path)
	}
	return dir, nil
}

// URIDigest is the digest of a source.uri model: its files are fetched by
// whoever serves it, so the digest hashes the URI with the serving
// settings.
func URIDigest(m *manifest.Model) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "merlin uri v1\n%s\n%s", m.Spec.Source.URI, Settings(m)))
	return hex.EncodeToString(sum[:])
}

// Version is the one way a manifest and a content digest become a
// servable version; the reconciler and `merlin render` both use it. The
// caller sets where the files are (Bundle or StorageURI).
func Version(m *manifest.Model, digest string, origin Origin) serving.Version {
	annotations := map[string]string{AnnotationManifest: filepath.ToSlash(m.File)}
	if origin.Repo != "" {
		annotations[AnnotationRepo] = origin.Repo
	}
	if origin.Commit != "" {
		annotations[AnnotationCommit] = origin.Commit
	}
	labels := maps.Clone(m.Metadata.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	return serving.Version{
		ID: serving.VersionID(m.Metadata.Name, digest), Model: m.Metadata.Name, Digest: digest,
		Type: m.Spec.Type, Protocol: m.Spec.Protocol, Image: m.Spec.Image,
		Env: m.Spec.Env, Resources: m.Spec.Resources, Replicas: m.Spec.Replicas,
		Labels: labels, Annotations: annotations,
	}
}
