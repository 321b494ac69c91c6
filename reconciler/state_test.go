package reconciler

import (
	"path/filepath"
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
