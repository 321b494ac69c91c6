// Package prom is the metrics.Provider that asks a Prometheus server how a
// candidate and its stable version did since a rollout step began.
//
// Two schemas say what to read: Router, the router's own merlin_* series
// scraped from Merlin's /metrics (local target), and Istio, the standard
// istio_requests_total / istio_request_duration_milliseconds series of the
// predictor pods' sidecars (Kubernetes target).
//
// # Exact counts, not rates
//
// The analysis compares counts against thresholds (minRequests 50, error
// rate 1%), so the counts must be the requests that happened, not an
// estimate. PromQL's increase(x[w]) extrapolates to the window's edges and
// returns 49.3 or 51.8 for 50 requests; `x - x offset w` is exact but
// breaks on a counter reset. So the provider fetches the raw samples of
// each series with one range-vector query per version
// (`{__name__=~"…",model="m",version="v"}[w+lookback]`) and differences
// them itself (gained): baseline is the last sample at or before the
// window's start, a drop is a reset that counts the new value in full,
// and a series born inside the window counts from zero. Integer counters
// give integers, and a router restart mid-window loses nothing that was
// scraped. The price is transferring every sample of the window, about 70
// series per version for the router — fine for rollout steps of seconds
// to hours.
//
// # Latency: buckets, not a p99
//
// The per-bucket gains of the `_bucket` series are differenced to
// non-cumulative counts and mapped onto metrics.BucketBounds (rebucket),
// filling Snapshot.Buckets exactly as the local provider does. The
// alternative, histogram_quantile in PromQL with a p99 field on the
// Window, would give the analysis two ways to read latency; with buckets
// the analysis stays backend-agnostic (Snapshot.Quantile for both), a
// window can be subtracted or merged, and Istio's millisecond buckets are
// just another layout: a coarse bucket is spread uniformly over the fine
// ones it covers — histogram_quantile's own assumption — so the p99 agrees
// with histogram_quantile's within one fine bucket (25%), and with the
// truth within Istio's coarse bucket.
//
// # Short windows and staleness
//
// Counts are as of the last scrape. Window.End is the newest sample's
// time, so until one scrape has happened after the window's start the
// window has zero requests and zero duration, and the analysis is
// inconclusive (holds) rather than judging on nothing. A series silent
// for longer than Options.Lookback (default 5m, Prometheus' staleness
// period) before the window has no baseline and counts from zero.
// Limits, shared with PromQL's increase(): a restart whose counters have
// already grown past their old values by the next scrape is not seen as a
// reset (undercount), and a target Prometheus starts scraping late has
// its history counted as if it happened in the window.
//
// # Kubernetes: which series are a version
//
// A version is an InferenceService named after the version id. KServe
// names the predictor's Deployment <isvc>-predictor (RawDeployment;
// constants.PredictorServiceName) or <isvc>-predictor-<revision>-deployment
// (Serverless), and Istio reports the owning Deployment as
// destination_workload, so the default selector is
// destination_workload=~"<version>-predictor(-[0-9]+-deployment)?" with
// reporter="destination" (each request counted once, by the predictor's
// sidecar). The pod label serving.kserve.io/inferenceservice=<version>
// would be exact but is not an Istio metric label unless a Telemetry
// tagOverride adds it; IstioOptions.VersionLabel/VersionPattern select by
// such a tag instead.
package prom
