package manifest

import (
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
)

const goodModel = `apiVersion: merlin.dev/v1
kind: Model
metadata:
  name: %s
spec:
  type: sklearn
  source:
    path: ./model
  rollout:
    strategy: direct
`

// TestLoadUnreadableManifest: a merlin.yaml that cannot be read (a
// dangling symlink, one pointing outside the repository) is an error of
// that file only; the other manifests load.
func TestLoadUnreadableManifest(t *testing.T) {
	link := func(target string) *fstest.MapFile {
		return &fstest.MapFile{Data: []byte(target), Mode: fs.ModeSymlink | 0o777}
	}
	fsys := fstest.MapFS{
		"good/merlin.yaml":      {Data: []byte(strings.ReplaceAll(goodModel, "%s", "good"))},
		"good/model/MLmodel":    {Data: []byte("flavors: {}\n")},
		"dangling/merlin.yaml":  link("gone.yaml"),
		"escapes/merlin.yaml":   link("../../etc/merlin.yaml"),
		"absolute/merlin.yaml":  link("/etc/merlin.yaml"),
		"inside/merlin.yaml":    link("../good/merlin.yaml"),
		"inside/model/MLmodel":  {Data: []byte("flavors: {}\n")},
		"unrelated/notes.txt":   {Data: []byte("x")},
		"unrelated/merlin.yml":  link("nowhere"),
		"unrelated/model/x.pkl": {Data: []byte("x")},
	}
	files, err := Load(fsys, ".")
	if err != nil {
		t.Fatalf("Load: %v; want the unreadable files as file errors", err)
	}
	got := map[string]string{}
	for _, f := range files {
		got[f.Name] = f.AllErrors().Error()
	}
	want := map[string]string{
		"absolute/merlin.yaml": `absolute/merlin.yaml:1:1: symlink to "/etc/merlin.yaml" points outside the repository`,
		"dangling/merlin.yaml": `dangling/merlin.yaml:1:1: symlink to "gone.yaml": the target does not exist`,
		"escapes/merlin.yaml":  `escapes/merlin.yaml:1:1: symlink to "../../etc/merlin.yaml" points outside the repository`,
		"good/merlin.yaml":     "",
		"inside/merlin.yaml":   `inside/merlin.yaml:4:9: metadata.name: duplicate model name "good"`,
	}
	for name, w := range want {
		if g, ok := got[name]; !ok || !strings.HasPrefix(g, w) || (w == "" && g != "") {
			t.Errorf("%s: %q, want %q", name, g, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("files %v, want %d", got, len(want))
	}
}
