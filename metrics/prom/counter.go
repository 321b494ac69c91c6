package prom

import (
	"cmp"
	"math"
	"slices"
	"sort"

	"github.com/prometheus/common/model"

	"merlin.dev/merlin/metrics"
)

// gained returns what one counter series gained after since, from its raw
// samples (oldest first) reaching back to before since.
//
// The baseline is the last sample at or before since. A series without
// one was born inside the window (a version's first request, its first
// 5xx, its first compared prediction) and counts from zero — where
// PromQL's increase() would silently drop the first sample's value. A
// drop between two samples is a counter reset (router restart) and counts
// the new value in full, as Prometheus does. Nothing is extrapolated, so
// integer counters give integers.
func gained(samples []model.SamplePair, since model.Time) float64 {
	prev, total := 0.0, 0.0
	for _, s := range samples {
		v := float64(s.Value)
		if math.IsNaN(v) {
			continue
		}
		if s.Timestamp <= since {
			prev = v
			continue
		}
		if v >= prev {
			total += v - prev
		} else {
			total += v
		}
		prev = v
	}
	return total
}

// count rounds a summed counter gain to a count; negative or NaN gains
// (which a well-behaved counter never has) count as zero.
func count(v float64) uint64 {
	if !(v > 0) {
		return 0
	}
	return uint64(math.Round(v))
}

// cumBucket is one cumulative histogram bucket: observations ≤ le.
type cumBucket struct {
	le float64 // upper bound in seconds; +Inf for the last
	n  float64
}

// rebucket turns cumulative buckets of any layout (the router's own, or
// Istio's coarse millisecond ones) into counts over metrics.BucketBounds,
// so that Snapshot.Quantile — and with it the rollout analysis — works the
// same whichever backend measured. A source bucket (lo, hi] whose bounds
// are the router's maps onto one bucket exactly; a coarser one is spread
// over the fine buckets it overlaps in proportion to the overlap, which is
// the uniform-within-bucket assumption histogram_quantile makes, so the
// p99 read from the result agrees with histogram_quantile's up to one fine
// bucket (25%).
func rebucket(cum []cumBucket) [62]uint64 {
	var out [62]uint64
	slices.SortFunc(cum, func(a, b cumBucket) int { return cmp.Compare(a.le, b.le) })
	fine := metrics.BucketBounds()
	lo, below := 0.0, 0.0
	for _, b := range cum {
		n := count(b.n - below)
		if b.n > below {
			below = b.n
		}
		if n > 0 {
			spread(&out, fine, lo, b.le, n)
		}
		lo = b.le
	}
	return out
}

// spread distributes n observations of the source bucket (lo, hi] over
// the fine buckets by overlap, rounding by largest remainder so the total
// is exact.
func spread(out *[62]uint64, fine []float64, lo, hi float64, n uint64) {
	last := len(fine) // index of the +Inf bucket
	if math.IsInf(hi, 1) || lo >= fine[last-1] {
		out[last] += n
		return
	}
	if hi <= lo { // a malformed layout; keep the count, at its bound
		out[sort.SearchFloat64s(fine, hi)] += n
		return
	}
	type share struct {
		i    int
		frac float64
	}
	var shares []share
	for i := 0; i <= last; i++ {
		flo, fhi := 0.0, math.Inf(1)
		if i > 0 {
			flo = fine[i-1]
		}
		if i < last {
			fhi = fine[i]
		}
		if ov := math.Min(hi, fhi) - math.Max(lo, flo); ov > 0 {
			shares = append(shares, share{i, ov / (hi - lo) * float64(n)})
		}
	}
	given := uint64(0)
	for k := range shares {
		whole := math.Floor(shares[k].frac)
		out[shares[k].i] += uint64(whole)
		given += uint64(whole)
		shares[k].frac -= whole
	}
	slices.SortStableFunc(shares, func(a, b share) int { return cmp.Compare(b.frac, a.frac) })
	for k := 0; given < n && k < len(shares); k++ {
		out[shares[k].i]++
		given++
	}
}
