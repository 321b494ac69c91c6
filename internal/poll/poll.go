// Package poll waits in tests for what converges in the background (a
// version becoming ready, a daemon taking the lead): it checks a condition
// every 50 ms and fails the test when the condition does not hold in time.
package poll

import (
	"testing"
	"time"
)

// Interval is how often Until checks.
const Interval = 50 * time.Millisecond

// Until checks cond every Interval until it holds, and fails the test
// (naming what it waited for) when d passes first.
func Until(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(Interval)
	}
}
