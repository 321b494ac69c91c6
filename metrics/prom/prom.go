package prom

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"merlin.dev/merlin/metrics"
)

// Options configure a Provider.
type Options struct {
	// URL is the Prometheus server, e.g. http://prometheus:9090. Required.
	URL string
	// Schema names the series to read; Router() when zero.
	Schema Schema
	// Lookback is how far before a window's start a counter's baseline
	// sample is searched for. Default 5m, Prometheus' staleness period: a
	// series silent for longer than that is gone, and one that reappears
	// counts from zero.
	Lookback time.Duration
	// Timeout bounds one Window call. Default 10s.
	Timeout time.Duration
	// RoundTripper for the HTTP API; http.DefaultTransport when nil.
	RoundTripper http.RoundTripper
}

// Provider reads version metrics from a Prometheus server.
type Provider struct {
	api      v1.API
	schema   Schema
	lookback time.Duration
	timeout  time.Duration
	now      func() time.Time
}

var _ metrics.Provider = (*Provider)(nil)

// New returns a Provider for the Prometheus server at o.URL. It does not
// contact the server: an unreachable server is an error of each Window,
// which the rollout treats as inconclusive.
func New(o Options) (*Provider, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("prometheus url %q: want http(s)://host[:port][/path]", o.URL)
	}
	if o.Schema.Requests == "" {
		o.Schema = Router()
	}
	if err := o.Schema.validate(); err != nil {
		return nil, err
	}
	if o.Lookback == 0 {
		o.Lookback = 5 * time.Minute
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Lookback < 0 || o.Timeout < 0 {
		return nil, errors.New("prometheus: lookback and timeout must be positive")
	}
	c, err := api.NewClient(api.Config{Address: o.URL, RoundTripper: o.RoundTripper})
	if err != nil {
		return nil, fmt.Errorf("prometheus client: %w", err)
	}
	return &Provider{api: v1.NewAPI(c), schema: o.Schema, lookback: o.Lookback, timeout: o.Timeout, now: time.Now}, nil
}

// Window implements metrics.Provider. Counts are as of Prometheus' last
// scrape: Window.End is the newest sample's time (Start when there is
// none yet), so a window younger than one scrape measures nothing and
// the analysis stays inconclusive instead of judging on partial data.
func (p *Provider) Window(ctx context.Context, q metrics.Query) (metrics.Window, error) {
	end := p.now()
	since := q.Since
	if since.After(end) {
		since = end
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	w := metrics.Window{Start: since, End: since}
	for _, v := range []struct {
		version string
		snap    *metrics.Snapshot
	}{{q.Candidate, &w.Candidate}, {q.Stable, &w.Stable}} {
		if v.version == "" {
			continue
		}
		snap, last, err := p.version(ctx, q.Model, v.version, since, end)
		if err != nil {
			return metrics.Window{}, fmt.Errorf("prometheus: metrics of %s: %w", v.version, err)
		}
		*v.snap = snap
		if last.After(w.End) {
			w.End = last
		}
	}
	w.Candidate.At, w.Stable.At = w.End, w.End
	return w, nil
}

// version reads one version's raw samples from shortly before since up to
// end — one range query per selector, all of the version's metrics at
// once — and folds them into a Snapshot.
func (p *Provider) version(ctx context.Context, modelName, version string, since, end time.Time) (metrics.Snapshot, time.Time, error) {
	s := p.schema
	groups := map[string][]string{}
	groups[s.Traffic(modelName, version)] = []string{s.Requests, s.Latency + "_bucket", s.Latency + "_sum"}
	for _, name := range []string{s.Compared, s.Dropped} {
		if name != "" {
			sel := s.Merlin(modelName, version)
			groups[sel] = append(groups[sel], name)
		}
	}
	selectors := slices.Sorted(maps.Keys(groups))
	rangeMs := int64(math.Ceil(float64(end.Sub(since)+p.lookback) / float64(time.Millisecond)))
	var series []*model.SampleStream
	for _, sel := range selectors {
		query := fmt.Sprintf("{%s,%s}[%dms]", matcher(model.MetricNameLabel, "=~", strings.Join(groups[sel], "|")), sel, rangeMs)
		v, _, err := p.api.Query(ctx, query, end)
		if err != nil {
			return metrics.Snapshot{}, time.Time{}, fmt.Errorf("query %s: %w", query, err)
		}
		m, ok := v.(model.Matrix)
		if !ok {
			return metrics.Snapshot{}, time.Time{}, fmt.Errorf("query %s: got a %s, want a matrix", query, v.Type())
		}
		series = append(series, m...)
	}
	snap, last := fold(s, series, model.TimeFromUnixNano(since.UnixNano()))
	return snap, last.Time(), nil
}

// fold sums what every series gained after since into a Snapshot, and
// returns the newest sample time after since (since when there is none).
func fold(s Schema, series []*model.SampleStream, since model.Time) (metrics.Snapshot, model.Time) {
	var snap metrics.Snapshot
	var requests, errs, client, sum, agree, disagree, cmpFail, dropped float64
	cum := map[float64]float64{}
	last := since
	for _, ss := range series {
		if n := len(ss.Values); n > 0 && ss.Values[n-1].Timestamp > last {
			last = ss.Values[n-1].Timestamp
		}
		g := gained(ss.Values, since)
		switch string(ss.Metric[model.MetricNameLabel]) {
		case s.Requests:
			requests += g
			switch code := string(ss.Metric[model.LabelName(s.CodeLabel)]); {
			case errorClass(code):
				errs += g
			case clientClass(code):
				client += g
			}
		case s.Latency + "_bucket":
			le, err := strconv.ParseFloat(string(ss.Metric[model.BucketLabel]), 64)
			if err == nil {
				cum[le*s.LatencyUnit] += g
			}
		case s.Latency + "_sum":
			sum += g
		case s.Compared:
			switch string(ss.Metric[model.LabelName(s.ResultLabel)]) {
			case metrics.Agree:
				agree += g
			case metrics.Disagree:
				disagree += g
			default:
				cmpFail += g
			}
		case s.Dropped:
			dropped += g
		}
	}
	snap.Requests, snap.Errors, snap.Client = count(requests), count(errs), count(client)
	snap.LatencyNs = count(sum * s.LatencyUnit * 1e9)
	snap.Agree, snap.Disagree, snap.CmpFail, snap.Dropped = count(agree), count(disagree), count(cmpFail), count(dropped)
	bs := make([]cumBucket, 0, len(cum))
	for le, n := range cum {
		bs = append(bs, cumBucket{le: le, n: n})
	}
	snap.Buckets = rebucket(bs)
	return snap, last
}
