package pullrequest

import (
	"fmt"
	"testing"
	"time"
)

// run feeds offers (at their times) to an Edits and sends whatever is due
// at each tick, returning the edits made.
func run(e Edits, offers map[time.Duration]string, ticks []time.Duration) []string {
	var sent []string
	for _, tick := range ticks {
		if body, ok := offers[tick]; ok {
			e = e.Offer(body)
		}
		now := t0.Add(tick)
		if send, _ := e.Due(now); send {
			sent = append(sent, fmt.Sprintf("%s@%s", e.Pending, tick))
			e = e.Sent(e.Pending, now)
		}
	}
	return sent
}

func TestEditsCoalesceABurst(t *testing.T) {
	e := Edits{Interval: 10 * time.Second, LastSent: t0, OnGitHub: "v0"}
	for i := 1; i <= 50; i++ {
		e = e.Offer(fmt.Sprintf("v%d", i))
		if send, _ := e.Due(t0.Add(time.Duration(i) * 100 * time.Millisecond)); send {
			t.Fatalf("event %d sent before the interval passed", i)
		}
	}
	send, at := e.Due(t0.Add(5 * time.Second))
	if send || !at.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("Due = %v, %v; want a wake-up at +10s", send, at)
	}
	send, _ = e.Due(t0.Add(10 * time.Second))
	if !send || e.Pending != "v50" {
		t.Fatalf("at +10s: send %v of %q; want the latest, v50", send, e.Pending)
	}
	e = e.Sent(e.Pending, t0.Add(10*time.Second))
	if send, at := e.Due(t0.Add(11 * time.Second)); send || !at.IsZero() {
		t.Fatalf("a second edit is planned: %v %v", send, at)
	}
}

func TestEdits(t *testing.T) {
	s := time.Second
	tests := []struct {
		name   string
		start  Edits
		offers map[time.Duration]string
		ticks  []time.Duration
		want   []string
	}{
		{"first comment goes out at once", Edits{Interval: 10 * s}, map[time.Duration]string{0: "a"}, []time.Duration{0}, []string{"a@0s"}},
		{"same text is not sent again", Edits{Interval: 10 * s, LastSent: t0.Add(-time.Minute), OnGitHub: "a"}, map[time.Duration]string{0: "a"}, []time.Duration{0, 20 * s}, nil},
		{"a change back to what GitHub shows cancels the edit", Edits{Interval: 10 * s, LastSent: t0, OnGitHub: "a"},
			map[time.Duration]string{1 * s: "b", 2 * s: "a"}, []time.Duration{1 * s, 2 * s, 10 * s}, nil},
		{"one edit per interval", Edits{Interval: 10 * s},
			map[time.Duration]string{0: "a", 1 * s: "b", 5 * s: "c", 12 * s: "d", 25 * s: "e"},
			[]time.Duration{0, 1 * s, 5 * s, 10 * s, 12 * s, 19 * s, 20 * s, 25 * s, 30 * s},
			[]string{"a@0s", "c@10s", "d@20s", "e@30s"}},
		{"quiet after an interval: at once", Edits{Interval: 10 * s, LastSent: t0.Add(-time.Minute), OnGitHub: "a"},
			map[time.Duration]string{0: "b"}, []time.Duration{0}, []string{"b@0s"}},
	}
	for _, tt := range tests {
		got := run(tt.start, tt.offers, tt.ticks)
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s: edits %q, want %q", tt.name, got, tt.want)
		}
	}
}
