package metrics_test

import (
	"testing"
	"time"

	"merlin.dev/merlin/metrics"
	"merlin.dev/merlin/metrics/metricstest"
)

// localBackend is the router's registry read in-process. A restart of
// the router is a restart of the daemon, so it brings a new registry and
// a new provider.
type localBackend struct {
	reg *metrics.Registry
	p   *metrics.Local
}

func (b *localBackend) Provider() metrics.Provider { return b.p }
func (b *localBackend) Observe(m, v string, code int, d time.Duration) {
	b.reg.For(m, v).Observe(code, d)
}
func (b *localBackend) Compared(m, v, outcome string) { b.reg.For(m, v).Compared(outcome) }
func (b *localBackend) Dropped(m, v string)           { b.reg.For(m, v).Dropped() }
func (b *localBackend) Settle(*testing.T)             {}
func (b *localBackend) Restart(*testing.T) {
	b.reg = metrics.NewRegistry()
	b.p = metrics.NewLocal(b.reg)
}

func TestLocalContract(t *testing.T) {
	metricstest.Run(t, metricstest.Harness{
		Start: func(*testing.T) metricstest.Backend {
			b := &localBackend{}
			b.Restart(nil)
			return b
		},
	})
}
