package github

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// etagTransport makes GETs conditional. GitHub answers an unchanged
// resource with 304 and does not count it against the rate limit; the
// caller (go-github) sees the cached 200 as if it had been sent again.
type etagTransport struct {
	next http.RoundTripper
	max  int // entries kept; the oldest goes first

	mu    sync.Mutex
	cache map[string]cachedResponse
	order []string
}

type cachedResponse struct {
	etag   string
	header http.Header
	body   []byte
}

func (t *etagTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet {
		return t.next.RoundTrip(req)
	}
	key := req.URL.String()
	t.mu.Lock()
	hit, ok := t.cache[key]
	t.mu.Unlock()
	if ok {
		req = req.Clone(req.Context())
		req.Header.Set("If-None-Match", hit.etag)
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusNotModified && ok:
		_ = resp.Body.Close()
		h := hit.header.Clone()
		for k, v := range resp.Header { // fresh rate-limit figures
			if strings.HasPrefix(k, "X-Ratelimit-") {
				h[k] = v
			}
		}
		resp.StatusCode, resp.Status, resp.Header = http.StatusOK, "200 OK", h
		resp.Body = io.NopCloser(bytes.NewReader(hit.body))
		resp.ContentLength = int64(len(hit.body))
	case resp.StatusCode == http.StatusOK && resp.Header.Get("ETag") != "":
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		t.store(key, cachedResponse{etag: resp.Header.Get("ETag"), header: resp.Header.Clone(), body: body})
	}
	return resp, nil
}

func (t *etagTransport) store(key string, c cachedResponse) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cache == nil {
		t.cache = map[string]cachedResponse{}
	}
	if _, ok := t.cache[key]; !ok {
		t.order = append(t.order, key)
	}
	t.cache[key] = c
	for len(t.order) > t.max {
		delete(t.cache, t.order[0])
		t.order = t.order[1:]
	}
}

// authTransport sets the Authorization header from a token source.
type authTransport struct {
	next  http.RoundTripper
	token func(ctx context.Context) (string, error)
	// invalidate, when set, drops a token GitHub refused (an installation
	// token revoked before its expiry); the request is sent once more
	// with a fresh one.
	invalidate func(token string)
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		tok, err := t.token(req.Context())
		if err != nil {
			return nil, err
		}
		r := req.Clone(req.Context())
		r.Header.Set("Authorization", "Bearer "+tok)
		resp, err := t.next.RoundTrip(r)
		if err != nil || resp.StatusCode != http.StatusUnauthorized || t.invalidate == nil || attempt > 0 {
			return resp, err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		t.invalidate(tok)
		if req, err = rewind(req); err != nil {
			return nil, err
		}
	}
}

// countTransport counts every attempt that got an answer.
type countTransport struct {
	next    http.RoundTripper
	metrics *Metrics
}

func (t *countTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err == nil {
		t.metrics.observe(Endpoint(req.Method, req.URL.Path), resp.StatusCode, resp.Header.Get("X-RateLimit-Remaining"))
	}
	return resp, err
}

// Policy bounds the client's waiting and retrying.
type Policy struct {
	// MaxWait is the longest a rate limit is waited out; a later reset is
	// returned to the caller as an error (go-github's RateLimitError).
	MaxWait time.Duration
	// MinWait is waited when a rate limit names no time, or one already
	// past (clock skew).
	MinWait time.Duration
	// SecondaryWait is waited for a secondary rate limit that says no more
	// (GitHub: "wait for at least one minute").
	SecondaryWait time.Duration
	// RateLimitRetries bounds how often one request waits out a limit.
	RateLimitRetries int
	// Retries bounds the retries of one request after a 5xx.
	Retries int
	// Backoff is the first 5xx backoff; it doubles, with full jitter.
	Backoff time.Duration
}

// DefaultPolicy waits out a rate limit up to 5 minutes and retries a 5xx
// three times from 500 ms.
var DefaultPolicy = Policy{MaxWait: 5 * time.Minute, MinWait: time.Second, SecondaryWait: time.Minute,
	RateLimitRetries: 3, Retries: 3, Backoff: 500 * time.Millisecond}

// answer is what decide needs of a response.
type answer struct {
	status int
	header http.Header
	body   []byte // only read for 403s
}

// decision says whether to send a request again, after how long.
type decision struct {
	retry     bool
	wait      time.Duration
	rateLimit bool // a rate limit, not a server error
	reason    string
}

// decide is the retry policy, pure: attempts counts the rate-limit waits
// or 5xx retries already made, jitter is in [0,1).
func decide(p Policy, endpoint string, a answer, attempts int, now time.Time, jitter float64) decision {
	if a.status == http.StatusForbidden || a.status == http.StatusTooManyRequests {
		wait, ok := rateLimitWait(p, a, now)
		if !ok {
			return decision{reason: "forbidden"}
		}
		if attempts >= p.RateLimitRetries || wait > p.MaxWait {
			return decision{rateLimit: true, wait: wait, reason: "rate limited beyond the wait allowed"}
		}
		return decision{retry: true, rateLimit: true, wait: wait, reason: "rate limited"}
	}
	if a.status >= 500 && a.status != http.StatusNotImplemented {
		if attempts >= p.Retries || !retriable5xx(endpoint) {
			return decision{reason: "server error"}
		}
		backoff := p.Backoff << attempts
		return decision{retry: true, wait: time.Duration(jitter * float64(backoff)), reason: "server error"}
	}
	return decision{}
}

// rateLimitWait reads how long GitHub asks to wait; ok is false for a 403
// that is not a rate limit (a permission refused).
func rateLimitWait(p Policy, a answer, now time.Time) (time.Duration, bool) {
	if s := a.header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil {
			return max(time.Duration(n)*time.Second, p.MinWait), true
		}
	}
	if a.header.Get("X-RateLimit-Remaining") == "0" {
		if n, err := strconv.ParseInt(a.header.Get("X-RateLimit-Reset"), 10, 64); err == nil {
			return max(time.Unix(n, 0).Sub(now), p.MinWait), true
		}
		return p.MinWait, true
	}
	if bytes.Contains(bytes.ToLower(a.body), []byte("secondary rate limit")) {
		return p.SecondaryWait, true
	}
	if a.status == http.StatusTooManyRequests {
		return p.MinWait, true
	}
	return 0, false
}

// retriable5xx: creating a comment is not retried after a 5xx, which may
// have come after GitHub created it; the sticky comment's owner finds it by
// its marker next time instead of posting a second one.
func retriable5xx(endpoint string) bool {
	return endpoint != "POST /repos/{owner}/{repo}/issues/{issue_number}/comments"
}

// retryTransport applies a Policy. A rate limit is the client's, not one
// request's: while one request waits it out, the others wait too instead
// of being sent into it (GitHub counts those against the integration).
type retryTransport struct {
	next   http.RoundTripper
	policy Policy
	log    *slog.Logger
	now    func() time.Time

	mu      sync.Mutex
	limited time.Time // no request is sent before it
}

// block holds every request until d from now (a rate limit's end).
func (t *retryTransport) block(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if until := t.now().Add(d); until.After(t.limited) {
		t.limited = until
	}
}

// waitLimit waits out a rate limit another request met, up to MaxWait.
func (t *retryTransport) waitLimit(ctx context.Context) error {
	t.mu.Lock()
	wait := t.limited.Sub(t.now())
	t.mu.Unlock()
	if wait <= 0 {
		return nil
	}
	return sleep(ctx, min(wait, t.policy.MaxWait))
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	endpoint := Endpoint(req.Method, req.URL.Path)
	limited, failed := 0, 0
	for {
		if err := t.waitLimit(req.Context()); err != nil {
			return nil, err
		}
		resp, err := t.next.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		a := answer{status: resp.StatusCode, header: resp.Header}
		if resp.StatusCode == http.StatusForbidden {
			a.body, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
			if err != nil {
				return nil, err
			}
			resp.Body = io.NopCloser(bytes.NewReader(a.body))
		}
		attempts := failed
		if resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusTooManyRequests {
			attempts = limited
		}
		d := decide(t.policy, endpoint, a, attempts, t.now(), rand.Float64())
		if d.rateLimit {
			t.block(d.wait)
		}
		if !d.retry {
			return resp, nil
		}
		if d.rateLimit {
			limited++
		} else {
			failed++
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		t.log.Warn("github: waiting before retrying", "endpoint", endpoint, "status", resp.StatusCode, "reason", d.reason, "wait", d.wait)
		if !d.rateLimit { // a rate limit is waited out at the top, with the others
			if err := sleep(req.Context(), d.wait); err != nil {
				return nil, err
			}
		}
		if req, err = rewind(req); err != nil {
			return nil, err
		}
	}
}

// rewind returns req with a fresh body for another attempt.
func rewind(req *http.Request) (*http.Request, error) {
	if req.Body == nil || req.GetBody == nil {
		return req, nil
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Body = body
	return r, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
