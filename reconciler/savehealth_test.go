package reconciler

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"
	"time"
)

// TestSaveHealth: a save failing every second for an hour is logged when
// it starts, every saveErrorEvery after, and again when its cause changes;
// the first save that succeeds is logged once, and then nothing.
func TestSaveHealth(t *testing.T) {
	enospc := func(i int) error { // each attempt names its own temporary file
		return fmt.Errorf("save state file s.json: %w", &fs.PathError{Op: "write", Path: fmt.Sprintf(".s.json.tmp-%d", i), Err: syscall.ENOSPC})
	}
	var h saveHealth
	t0 := time.Unix(0, 0)
	count := map[saveLog]int{}
	for i := range 3600 {
		count[h.observe(enospc(i), t0.Add(time.Duration(i)*time.Second))]++
	}
	if want := 6; count[saveFailed] != want || count[saveRecovered] != 0 {
		t.Errorf("an hour of ENOSPC every second: %v, want %d failures logged", count, want)
	}
	now := t0.Add(time.Hour)
	if got := h.observe(fmt.Errorf("save: %w", syscall.EROFS), now); got != saveFailed {
		t.Errorf("another cause: %v, want it logged", got)
	}
	if got := h.observe(errors.New("no such state store"), now.Add(time.Second)); got != saveFailed {
		t.Errorf("another message without a system error: %v, want it logged", got)
	}
	if h.err == "" || !h.since.Equal(t0) {
		t.Errorf("failing: err %q since %v, want an error since %v", h.err, h.since, t0)
	}
	if got := h.observe(nil, now.Add(2*time.Second)); got != saveRecovered || h.err != "" {
		t.Errorf("first success: %v, err %q; want recovered and no error", got, h.err)
	}
	if got := h.observe(nil, now.Add(3*time.Second)); got != saveQuiet {
		t.Errorf("second success: %v, want nothing logged", got)
	}
}
