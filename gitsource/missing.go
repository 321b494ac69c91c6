package gitsource

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ErrRepoMissing matches (errors.Is) the error of a repository on this
// machine whose directory does not exist: moved away or deleted, perhaps
// for a while.
var ErrRepoMissing = errors.New("repository directory does not exist")

// explainMissing names the reason of a failure to read a local repository
// whose directory is gone ("repository not found" says too little), and
// what the daemon does meanwhile. Other failures are returned as they are.
func (r *remote) explainMissing(err error) error {
	if r.localPath == "" {
		return err
	}
	if _, serr := os.Stat(r.localPath); !errors.Is(serr, fs.ErrNotExist) {
		return err
	}
	return fmt.Errorf("%w: %s (moved or deleted?): its models keep serving what they served, and polling resumes when it is back", ErrRepoMissing, r.localPath)
}
