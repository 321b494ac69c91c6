package local

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/serving"
)

// serversOf lists the live processes (model servers and their workers)
// serving one of the version ids: their command lines name it after
// --version. (A sandboxed server's command line names its package and
// bundle by descriptor, not by the state directory.)
func serversOf(ids []string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !alive(pid) {
			continue
		}
		for _, id := range ids {
			if bytes.Contains(cmdline, []byte("\x00--version\x00"+id+"\x00")) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// TestCloseDuringStartBurst applies many models at once and closes the
// target while their servers are still starting: some forked, some ready,
// some not started yet. Close must stop every server it started, the ones
// mid-start included, and return; nothing of this target may survive it.
func TestCloseDuringStartBurst(t *testing.T) {
	requireSklearn(t)
	dir := t.TempDir()
	l := newTestLocal(t, dir)
	const n = 40
	ids := make([]string, n)
	for i := range n {
		v := testVersion(fmt.Sprintf("burst-%02d", i), 1, irisModel(t))
		ids[i] = v.ID
		d := serving.Deployment{Model: v.Model, Versions: []serving.Version{v}, Traffic: map[string]int{v.ID: 100}}
		if err := l.Apply(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { // whatever a failure left
		for _, pid := range serversOf(ids) {
			killAtEnd(t, pid)
		}
	})
	// Close in the middle of the burst: once a few servers run, before
	// all of them are ready.
	poll.Until(t, 2*time.Minute, "a few model servers running", func() bool { return len(serversOf(ids)) >= 5 })
	ready := 0
	l.mu.Lock()
	for _, id := range ids {
		if p := l.procs[id]; p != nil && p.isReady() {
			ready++
		}
	}
	l.mu.Unlock()
	started := len(serversOf(ids))
	closed := make(chan struct{})
	go func() { defer close(closed); l.Close() }()
	poll.Until(t, 2*time.Minute, "Close returns", func() bool {
		select {
		case <-closed:
			return true
		default:
			return false
		}
	})
	left := serversOf(ids)
	t.Logf("closed with %d model-server processes running, %d/%d versions ready; %d left after Close", started, ready, n, len(left))
	if len(left) > 0 {
		t.Fatalf("%d model-server processes survived Close: %v", len(left), left)
	}
}
