package pullrequest

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// maxSamples bounds a trend, so a long-lived preview keeps a short comment.
const maxSamples = 24

var sparks = []rune("▁▂▃▄▅▆▇█")

// Sparkline draws values as one line of block characters, scaled between
// lo and hi (hi ≤ lo: between the values' own minimum and maximum). Only
// the last maxSamples values are drawn.
func Sparkline(values []float64, lo, hi float64) string {
	if len(values) > maxSamples {
		values = values[len(values)-maxSamples:]
	}
	if len(values) == 0 {
		return ""
	}
	if hi <= lo {
		lo, hi = minMax(values)
	}
	var b strings.Builder
	for _, v := range values {
		i := len(sparks) - 1 // a flat line sits at the top: nothing moved
		if hi > lo && !math.IsNaN(v) {
			f := (min(max(v, lo), hi) - lo) / (hi - lo)
			i = int(math.Round(f * float64(len(sparks)-1)))
		}
		b.WriteRune(sparks[i])
	}
	return b.String()
}

// lastSamples returns at most maxSamples of the newest samples.
func lastSamples(h []Sample) []Sample {
	if len(h) > maxSamples {
		return h[len(h)-maxSamples:]
	}
	return h
}

// agreementChart renders a Mermaid xychart-beta of agreement over time,
// which GitHub draws; "" with fewer than two samples. Only numbers and
// fixed words go inside the fence, so nothing a user wrote can close it.
func agreementChart(h []Sample) string {
	h = lastSamples(h)
	if len(h) < 2 {
		return ""
	}
	labels := make([]string, len(h))
	points := make([]string, len(h))
	for i, s := range h {
		labels[i] = fmt.Sprintf("%q", s.At.UTC().Format("15:04"))
		points[i] = fmt.Sprintf("%.1f", 100*clamp01(s.Agreement))
	}
	return "```mermaid\nxychart-beta\n" +
		"  x-axis [" + strings.Join(labels, ", ") + "]\n" +
		"  y-axis \"agreement %\" 0 --> 100\n" +
		"  line [" + strings.Join(points, ", ") + "]\n" +
		"```\n"
}

func clamp01(f float64) float64 {
	if math.IsNaN(f) {
		return 0
	}
	return min(max(f, 0), 1)
}

func agreementValues(h []Sample) []float64 {
	out := make([]float64, len(h))
	for i, s := range h {
		out[i] = 100 * clamp01(s.Agreement)
	}
	return out
}

func p99Values(h []Sample) []float64 {
	out := make([]float64, len(h))
	for i, s := range h {
		out[i] = float64(s.P99) / float64(time.Millisecond)
	}
	return out
}

// trend shows the samples' agreement and p99 as sparklines, each scaled
// to its own range (printed beside it): the shape is what matters.
func trend(h []Sample) string {
	a, p := agreementValues(h), p99Values(h)
	lo, hi := minMax(a)
	plo, phi := minMax(p)
	return fmt.Sprintf("agreement %s %.1f–%.1f%%<br>p99 %s %s–%s",
		Sparkline(a, 0, 0), lo, hi, Sparkline(p, 0, 0), ms(time.Duration(plo*float64(time.Millisecond))), ms(time.Duration(phi*float64(time.Millisecond))))
}

func minMax(v []float64) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}
