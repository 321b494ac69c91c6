package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// stateLock is an exclusive lock on a state directory, held for a
// daemon's life: two daemons on one directory would adopt, and then stop,
// each other's model servers and overwrite each other's state. The lock
// file holds the holder's pid, for the error the next one gets.
type stateLock struct{ f *os.File }

func lockStateDir(dir string) (*stateLock, error) {
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock state dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "unknown pid"
			if data, rerr := os.ReadFile(path); rerr == nil {
				if pid, aerr := strconv.Atoi(strings.TrimSpace(string(data))); aerr == nil {
					holder = "pid " + strconv.Itoa(pid)
				}
			}
			return nil, fmt.Errorf("state dir %s is in use by another merlin daemon (%s, holding %s): stop it, or give this one its own local.stateDir", dir, holder, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// The pid is informative only: the lock is the flock, released by the
	// kernel however the process ends.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &stateLock{f: f}, nil
}

// release unlocks the directory (closing the file releases the flock).
func (l *stateLock) release() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}
