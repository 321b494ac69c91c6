package reconciler

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFileStore round-trips the state through the default store, as a
// restarted daemon reads it.
func TestFileStore(t *testing.T) {
	store := FileStore{Path: filepath.Join(t.TempDir(), "repos", "models.json")}
	st, err := loadState(t.Context(), store)
	if err != nil || len(st.Models) != 0 {
		t.Fatalf("empty store: %+v, %v", st, err)
	}
	st.SHA = "0123abc"
	st.Models["iris"] = &modelState{Name: "iris", Desired: "iris-3f2a9c1b"}
	if err := saveState(t.Context(), store, st); err != nil {
		t.Fatal(err)
	}
	got, err := loadState(t.Context(), FileStore{Path: store.Path})
	if err != nil {
		t.Fatal(err)
	}
	if got.SHA != "0123abc" || got.Models["iris"] == nil || got.Models["iris"].Desired != "iris-3f2a9c1b" {
		t.Errorf("loaded %+v", got)
	}
	if err := (FileStore{Path: store.Path}).Save(t.Context(), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := loadState(t.Context(), store); err == nil {
		t.Error("corrupt state loaded without error")
	}
}

// TestFileStoreCorrupt: an empty or truncated state file is never taken
// for "no state" (which would deploy the head at once and forget paused
// and rolled-back rollouts). Without a copy, Load fails naming the file;
// with the last good copy Save keeps beside it, the state comes back.
func TestFileStoreCorrupt(t *testing.T) {
	dir := t.TempDir()
	store := FileStore{Path: filepath.Join(dir, "repos", "models.json")}
	st := &repoState{SHA: "0123abc", Models: map[string]*modelState{"iris": {Name: "iris", Desired: "iris-3f2a9c1b"}}}
	if err := saveState(t.Context(), store, st); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(store.Path + LastGoodSuffix)
	if err != nil {
		t.Fatalf("no last good copy: %v", err)
	}
	for name, content := range map[string]string{"empty": "", "blank": "\n", "truncated": string(good[:len(good)/2])} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(store.Path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := loadState(t.Context(), store)
			if err != nil {
				t.Fatalf("with a good copy: %v", err)
			}
			if got.SHA != "0123abc" || got.Models["iris"] == nil {
				t.Errorf("restored %+v; want the saved state", got)
			}
			if err := os.Rename(store.Path+LastGoodSuffix, store.Path+".aside"); err != nil {
				t.Fatal(err)
			}
			_, err = loadState(t.Context(), store)
			if err == nil || !strings.Contains(err.Error(), store.Path) {
				t.Errorf("without a copy: %v; want an error naming %s", err, store.Path)
			}
			if err := os.Rename(store.Path+".aside", store.Path+LastGoodSuffix); err != nil {
				t.Fatal(err)
			}
		})
	}
	// A missing file is no state, whatever the copy holds.
	if err := os.Remove(store.Path); err != nil {
		t.Fatal(err)
	}
	got, err := loadState(t.Context(), store)
	if err != nil || got.SHA != "" || len(got.Models) != 0 {
		t.Errorf("missing file: %+v, %v; want no state", got, err)
	}
}
