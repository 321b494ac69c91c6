package local

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"

	"merlin.dev/merlin/metrics"
)

// RelTolerance is the relative difference under which two scores count as
// the same prediction. Labels (integers, strings, booleans) must be equal.
const RelTolerance = 1e-3

// Compare judges a candidate's answer against the baseline's for the same
// request: metrics.Agree when both succeeded with the same predictions,
// metrics.Disagree when they differ, metrics.Failed when either failed or
// is unreadable. Both KServe V1 ({"predictions": ...}) and Open Inference
// Protocol ({"outputs": [{"name", "data"}]}) answers are understood.
func Compare(candCode int, cand []byte, baseCode int, base []byte) string {
	if candCode != 200 || baseCode != 200 {
		if candCode == baseCode && candCode >= 400 && candCode < 500 {
			return metrics.Agree // both rejected the same bad input
		}
		return metrics.Failed
	}
	a, okA := predictions(cand)
	b, okB := predictions(base)
	if !okA || !okB {
		return metrics.Failed
	}
	if same(a, b) {
		return metrics.Agree
	}
	return metrics.Disagree
}

// predictions extracts the prediction part of an answer.
func predictions(body []byte) (any, bool) {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if dec.Decode(&doc) != nil {
		return nil, false
	}
	if p, ok := doc["predictions"]; ok {
		return p, true
	}
	outs, ok := doc["outputs"].([]any)
	if !ok {
		return nil, false
	}
	byName := make(map[string]any, len(outs))
	for _, o := range outs {
		m, ok := o.(map[string]any)
		if !ok {
			return nil, false
		}
		name, _ := m["name"].(string)
		byName[name] = m["data"]
	}
	return byName, true
}

func same(a, b any) bool {
	switch x := a.(type) {
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !same(x[i], y[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if w, ok := y[k]; !ok || !same(v, w) {
				return false
			}
		}
		return true
	case json.Number:
		y, ok := b.(json.Number)
		return ok && sameNumber(x, y)
	default:
		return a == b
	}
}

// sameNumber compares integers exactly (they are labels) and other numbers
// within RelTolerance (they are scores).
func sameNumber(a, b json.Number) bool {
	if isInt(a) && isInt(b) {
		return a == b
	}
	x, err1 := a.Float64()
	y, err2 := b.Float64()
	if err1 != nil || err2 != nil {
		return a == b
	}
	d := math.Abs(x - y)
	return d <= 1e-9 || d <= RelTolerance*math.Max(math.Abs(x), math.Abs(y))
}

func isInt(n json.Number) bool { return !strings.ContainsAny(string(n), ".eE") }
