package webhooks_test

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/internal/webhooktest"
	"merlin.dev/merlin/webhooks"
)

// BenchmarkAck measures how long GitHub waits for an answer (goal: p99 ≤
// 100 ms) and how long a push waits in the queue for the Sink, with
// bursts of 32 concurrent deliveries of the real push payload.
func BenchmarkAck(b *testing.B) {
	k := startHook(b, b.TempDir(), webhooks.Options{})
	body := pushToMaster(b)
	proto := webhooktest.Delivery{Event: "push", Body: body}.Request(b, k.url, secret) // validated once
	const burst = 32
	var mu sync.Mutex
	var acks []time.Duration
	sent := 0
	b.ResetTimer()
	for range b.N {
		var wg sync.WaitGroup
		for range burst {
			wg.Go(func() {
				req := proto.Clone(proto.Context())
				req.Header.Set("X-GitHub-Delivery", webhooktest.NewID())
				req.Body = io.NopCloser(bytes.NewReader(body))
				start := time.Now()
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				d := time.Since(start)
				if resp.StatusCode != http.StatusAccepted {
					b.Errorf("delivery: %d", resp.StatusCode)
				}
				mu.Lock()
				acks = append(acks, d)
				mu.Unlock()
			})
		}
		wg.Wait()
		sent += burst
		poll.Until(b, 10*time.Second, "the burst is delivered", func() bool { return len(k.rec.list()) == sent })
	}
	b.StopTimer()
	slices.Sort(acks)
	p := func(q float64) time.Duration { return acks[min(len(acks)-1, int(q*float64(len(acks))))] }
	b.ReportMetric(float64(p(0.5).Microseconds())/1000, "ack-p50-ms")
	b.ReportMetric(float64(p(0.99).Microseconds())/1000, "ack-p99-ms")
	b.Logf("webhook acknowledgement over %d deliveries in bursts of %d: p50 %v p99 %v max %v (goal p99 ≤ 100ms)",
		len(acks), burst, p(0.5), p(0.99), acks[len(acks)-1])
}
