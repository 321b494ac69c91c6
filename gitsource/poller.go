package gitsource

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// Poller defaults.
const (
	DefaultInterval     = time.Second
	DefaultBackoffBase  = time.Second
	DefaultBackoffCap   = 2 * time.Minute
	DefaultHeadTimeout  = 30 * time.Second
	DefaultFetchTimeout = 10 * time.Minute
)

// PollerConfig tunes a Poller; zero values use the defaults.
type PollerConfig struct {
	// Interval between Head polls while healthy.
	Interval time.Duration
	// BackoffBase is the delay after the first failure; it doubles per
	// consecutive failure, with ±20% jitter, up to BackoffCap. The delay is
	// never shorter than Interval.
	BackoffBase time.Duration
	BackoffCap  time.Duration
	// HeadTimeout and FetchTimeout bound one Head or Fetch call.
	HeadTimeout  time.Duration
	FetchTimeout time.Duration
}

func (c *PollerConfig) withDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Interval, DefaultInterval)
	def(&c.BackoffBase, DefaultBackoffBase)
	def(&c.BackoffCap, DefaultBackoffCap)
	def(&c.HeadTimeout, DefaultHeadTimeout)
	def(&c.FetchTimeout, DefaultFetchTimeout)
}

// Event reports a newly fetched revision.
type Event struct {
	// Revision is the new head; its files are available via Source.Tree.
	Revision Revision
	// Previous is the revision delivered before ("" for the first event).
	Previous string
	// Changed lists the paths that differ between Previous and Revision.
	Changed []string
	// Full is set when Changed is every path of Revision rather than a diff
	// (first event, or Previous no longer stored): resynchronise everything.
	Full bool
}

// Status is a snapshot of a Poller's health. It never contains credentials.
type Status struct {
	Repo   string `json:"repo"`
	URL    string `json:"url"` // credentials removed
	Branch string `json:"branch"`
	// SHA is the last delivered revision; it stays readable via Tree while
	// the remote fails.
	SHA string `json:"sha,omitempty"`
	// LastFetch is when SHA was fetched; LastCheck when the remote last
	// answered (a Head or Fetch that succeeded).
	LastFetch time.Time `json:"lastFetch,omitzero"`
	LastCheck time.Time `json:"lastCheck,omitzero"`
	// LastError is the latest failure ("" once an attempt succeeds).
	LastError           string `json:"lastError,omitempty"`
	ConsecutiveFailures int    `json:"consecutiveFailures"`
	// NextAttempt is when the next poll or retry is due.
	NextAttempt time.Time `json:"nextAttempt,omitzero"`
}

// Poller drives a Source: it polls Head every interval, fetches when the head
// moved or when Trigger is called, and delivers events.
type Poller struct {
	src     *Source
	cfg     PollerConfig
	trigger chan struct{}

	mu     sync.Mutex
	status Status

	last string // last delivered SHA; owned by Run
}

// NewPoller returns a Poller for src. Call Run to start it.
func NewPoller(src *Source, cfg PollerConfig) *Poller {
	cfg.withDefaults()
	return &Poller{
		src:     src,
		cfg:     cfg,
		trigger: make(chan struct{}, 1),
		status:  Status{Repo: src.Name(), URL: src.URL(), Branch: src.Branch()},
	}
}

// Trigger asks for an immediate fetch, skipping the wait and any backoff
// (webhooks call it). It never blocks; triggers coalesce.
func (p *Poller) Trigger() {
	select {
	case p.trigger <- struct{}{}:
	default:
	}
}

// Status returns a snapshot of the poller's state.
func (p *Poller) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// Run polls until ctx ends, sending each new revision on events. Do not
// call it concurrently. Sends block, so a slow consumer delays polling
// rather than losing events; each event's Changed is relative to the
// previous event. Each Run starts afresh: its first event is the head with
// Full set, even when an earlier Run delivered it, because the consumer
// may be new (the daemon starts new reconcilers each leadership term).
// Run returns ctx.Err().
func (p *Poller) Run(ctx context.Context, events chan<- Event) error {
	p.last = ""
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		forced := false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		case <-p.trigger:
			forced = true
		}
		err := p.poll(ctx, forced, events)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		timer.Reset(p.record(err))
	}
}

// poll runs one check: Head (unless forced or nothing was delivered yet),
// then Fetch and delivery if the head moved.
func (p *Poller) poll(ctx context.Context, forced bool, events chan<- Event) error {
	if !forced && p.last != "" {
		hctx, cancel := context.WithTimeout(ctx, p.cfg.HeadTimeout)
		head, err := p.src.Head(hctx)
		cancel()
		if err != nil {
			return err
		}
		if head == p.last {
			return nil
		}
	}
	fctx, cancel := context.WithTimeout(ctx, p.cfg.FetchTimeout)
	rev, err := p.src.Fetch(fctx)
	cancel()
	if err != nil {
		return err
	}
	if rev.SHA == p.last {
		return nil
	}
	paths, full, err := p.src.ChangedFull(ctx, p.last, rev.SHA)
	if err != nil {
		return err
	}
	ev := Event{Revision: rev, Previous: p.last, Changed: paths, Full: full}
	p.src.log.Info("new revision", "repo", p.src.Name(), "sha", rev.SHA,
		"previous", p.last, "changed", len(paths), "full", full)
	select {
	case events <- ev:
	case <-ctx.Done():
		return ctx.Err()
	}
	p.last = rev.SHA
	p.mu.Lock()
	p.status.SHA = rev.SHA
	p.status.LastFetch = time.Now()
	p.mu.Unlock()
	return nil
}

// record updates the status after an attempt and returns the delay until
// the next one.
func (p *Poller) record(err error) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	delay := p.cfg.Interval
	if err == nil {
		if p.status.ConsecutiveFailures > 0 {
			p.src.log.Info("remote reachable again", "repo", p.src.Name(),
				"failures", p.status.ConsecutiveFailures)
		}
		p.status.LastCheck = now
		p.status.LastError = ""
		p.status.ConsecutiveFailures = 0
	} else {
		p.status.ConsecutiveFailures++
		p.status.LastError = p.src.remote.redact(err.Error())
		delay = p.backoff(p.status.ConsecutiveFailures)
		p.src.log.Warn("poll failed", "repo", p.src.Name(), "sha", p.last,
			"err", p.status.LastError, "failures", p.status.ConsecutiveFailures, "retry_in", delay)
	}
	p.status.NextAttempt = now.Add(delay)
	return delay
}

// backoff returns the jittered delay after n consecutive failures.
func (p *Poller) backoff(n int) time.Duration {
	d := p.cfg.BackoffBase
	for i := 1; i < n && d < p.cfg.BackoffCap; i++ {
		d *= 2
	}
	d = time.Duration(float64(d) * (0.8 + 0.4*rand.Float64())) //nolint:gosec // jitter, not crypto
	return max(min(d, p.cfg.BackoffCap), p.cfg.Interval)
}
