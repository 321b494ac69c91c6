package metrics_test

import (
	"testing"
	"time"

	"merlin.dev/merlin/metrics"
)

// TestObserveClasses: a version's errors are its own failures; 4xx and
// 501 Not Implemented (a request no version serves, e.g. :explain) are the
// client's and cannot roll a canary back.
func TestObserveClasses(t *testing.T) {
	s := metrics.NewRegistry().For("iris", "iris-1a2b3c4d")
	for _, code := range []int{200, 400, 404, 501, 500, 502, 0} {
		s.Observe(code, time.Millisecond)
	}
	snap := s.Snapshot(time.Now())
	if snap.Requests != 7 || snap.Client != 3 || snap.Errors != 3 {
		t.Errorf("requests %d, client %d, errors %d; want 7, 3 (400, 404, 501), 3 (500, 502, no answer)", snap.Requests, snap.Client, snap.Errors)
	}
}
