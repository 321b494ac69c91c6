package local

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"merlin.dev/merlin/metrics"
)

// VersionHeader names the version that answered, on every model response.
const VersionHeader = "X-Merlin-Version"

// maxBody bounds the model servers' response bodies the router buffers.
const maxBody = 64 << 20

// routeTable is an immutable snapshot of every model's routes, swapped
// atomically whenever a model is routed anew, so that requests never see
// a half-applied split.
type routeTable struct {
	models map[string]*modelRoutes
}

type modelRoutes struct {
	choices    []choice // cumulative weights, ascending
	mirrors    []mirror // shadows with a share above zero
	compare    *process // requests served by compare are sampled ...
	baseline   *process // ... and also sent to baseline
	comparePct int
	gate       *limiter // the model's requests in flight
}

// mirror is one shadow version of a model and the share of the model's
// requests copied to it.
type mirror struct {
	p   *process
	pct int
}

type choice struct {
	cum int
	p   *process
}

// pick draws a version by weight.
func (m *modelRoutes) pick() *process {
	if len(m.choices) == 0 {
		return nil
	}
	n := rand.IntN(m.choices[len(m.choices)-1].cum)
	for _, c := range m.choices {
		if n < c.cum {
			return c.p
		}
	}
	return m.choices[len(m.choices)-1].p
}

// publishLocked rebuilds the route table: client traffic as each model is
// routed now (serving.Route's split, not the desired one), mirrors and
// comparisons as desired.
func (l *Local) publishLocked() {
	t := &routeTable{models: make(map[string]*modelRoutes, len(l.deployments))}
	for model, d := range l.deployments {
		r := l.routing[model]
		mr := &modelRoutes{gate: l.gateLocked(model)}
		cum := 0
		for _, id := range r.Keep {
			if w := r.Traffic[id]; w > 0 && l.procs[id] != nil {
				cum += w
				mr.choices = append(mr.choices, choice{cum: cum, p: l.procs[id]})
			}
		}
		for _, m := range d.Mirrors {
			if p := l.procs[m.Version]; p != nil && m.Percent > 0 {
				mr.mirrors = append(mr.mirrors, mirror{p: p, pct: m.Percent})
			}
		}
		if c := d.Compare; c != nil && c.Percent > 0 {
			mr.compare, mr.baseline, mr.comparePct = l.procs[c.Version], l.procs[c.Baseline], c.Percent
		}
		t.models[model] = mr
	}
	l.routes.Store(t)
}

// modelOf extracts the model name from a KServe V1 or Open Inference
// Protocol path: /v1/models/NAME[:verb] or /v2/models/NAME[/...].
func modelOf(path string) (string, bool) {
	var rest string
	var ok bool
	if rest, ok = strings.CutPrefix(path, "/v1/models/"); ok {
		if i := strings.IndexAny(rest, ":/"); i >= 0 {
			rest = rest[:i]
		}
	} else if rest, ok = strings.CutPrefix(path, "/v2/models/"); ok {
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			rest = rest[:i]
		}
	}
	return rest, ok && rest != ""
}

// isPredict reports whether a request asks for predictions (the requests
// mirrored and compared), as opposed to readiness or metadata.
func isPredict(r *http.Request) bool {
	return r.Method == http.MethodPost && (strings.HasSuffix(r.URL.Path, ":predict") || strings.HasSuffix(r.URL.Path, "/infer"))
}

// ServeHTTP routes a request to a version of its model: the version its
// path names (/v2/models/NAME/versions/VERSION/...), or one drawn by
// weight. Server-level endpoints it answers itself (protocol.go).
func (l *Local) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	model, ok := modelOf(r.URL.Path)
	if !ok {
		l.serveServer(w, r)
		return
	}
	body := l.admitRequest(w, r, model)
	if body == nil {
		return
	}
	defer body.end()
	version := versionOf(r.URL.Path)
	p, mr := l.acquire(model, version)
	if p == nil {
		noVersion(w, r, model, version, mr)
		return
	}
	defer p.release()
	w.Header().Set(VersionHeader, p.v.ID)
	if isModelReady(r) && !p.servable() {
		notReady(w, model, fmt.Sprintf("version %s is %s", p.v.ID, p.status().State))
		return
	}
	if err := p.awaitReady(r.Context()); err != nil {
		writeJSONError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	stats := l.stats.For(p.v.Model, p.v.ID)
	start := time.Now()
	resp, err := l.forward(r.Context(), p, r, body.payload)
	if err != nil {
		code := failedCode(r, body)
		stats.Observe(code, time.Since(start))
		writeJSONError(w, code, fmt.Sprintf("model server of %s: %v", p.v.ID, err))
		return
	}
	stats.Observe(resp.code, time.Since(start))
	if isModelMetadata(r) {
		withVersions(resp, mr.versions())
	}
	resp.write(w)
	if isPredict(r) && version == "" { // a request for one version is not the model's traffic to copy
		l.sideRequests(mr, p, r, body, resp)
	}
}

// acquire picks a version for a request, the one named when version is
// not "" (it must take traffic), and registers the request with it. A
// version retired between the pick and the registration is skipped by
// picking again from the newer table, once its retirer published it.
func (l *Local) acquire(model, version string) (*process, *modelRoutes) {
	for range 3 {
		mr := l.routes.Load().models[model]
		if mr == nil {
			return nil, nil
		}
		p := mr.choose(version)
		if p == nil {
			return nil, mr
		}
		if p.acquire() {
			return p, mr
		}
		// p was retired under l.mu, which is held until the table
		// without it is published: wait for that rather than draw
		// from the stale table again.
		l.mu.Lock()
		//nolint:staticcheck // an empty critical section: waiting for the publisher is the point
		l.mu.Unlock()
	}
	return nil, l.routes.Load().models[model]
}

// response is a model server's answer, buffered so that it can be written
// in one piece and compared with another version's.
type response struct {
	code   int
	header http.Header
	body   []byte
	keep   bool // the connection it came on can be reused
}

func (r *response) write(w http.ResponseWriter) {
	h := w.Header()
	for k, vs := range r.header {
		if !hopByHop(k) {
			h[k] = vs
		}
	}
	h.Set("Content-Length", strconv.Itoa(len(r.body)))
	w.WriteHeader(r.code)
	_, _ = w.Write(r.body)
}

// forward sends a request to a version's server and reads its answer.
func (l *Local) forward(ctx context.Context, p *process, in *http.Request, body payload) (*response, error) {
	return p.upstream().do(ctx, in.Method, in.URL.RequestURI(), in.Header, body)
}

// sideRequests sends the mirrored and compared copies of a served
// prediction request, in the background and bounded: under load they are
// dropped, never queued, so they cannot slow clients down. Each mirror
// draws its own share and is judged on its own stats; the copies share
// one read-only request. A streamed body is gone: its side requests are
// dropped.
func (l *Local) sideRequests(mr *modelRoutes, served *process, r *http.Request, body *reqBody, resp *response) {
	var in *http.Request
	for _, m := range mr.mirrors {
		if m.p != served && rand.IntN(100) < m.pct && l.admit(m.p, m.p, body) {
			if in == nil {
				in = sideCopy(r)
			}
			l.sideRequest(m.p, m.p, in, body, resp)
		}
	}
	if mr.compare == served && mr.baseline != nil && mr.baseline != served && rand.IntN(100) < mr.comparePct &&
		l.admit(mr.baseline, served, body) {
		if in == nil {
			in = sideCopy(r)
		}
		l.sideRequest(mr.baseline, served, in, body, resp)
	}
}

// sideCopy is what side requests keep of a client's request, which ends
// before they do.
func sideCopy(r *http.Request) *http.Request {
	return &http.Request{Method: r.Method, URL: r.URL, Header: r.Header.Clone()}
}

// admit takes a side-request slot, registers the request with `to` and
// holds the body, or counts it as dropped on the stats of `judged`: when
// too many are in flight, `to` is not ready (a shadow is never woken or
// waited for), or the body was streamed.
func (l *Local) admit(to, judged *process, body *reqBody) bool {
	if body.stream != nil {
		l.stats.For(judged.v.Model, judged.v.ID).Dropped()
		return false
	}
	select {
	case l.mirrorSem <- struct{}{}:
	default:
		l.stats.For(judged.v.Model, judged.v.ID).Dropped()
		return false
	}
	if !to.acquire() {
		<-l.mirrorSem
		l.stats.For(judged.v.Model, judged.v.ID).Dropped()
		return false
	}
	if !to.isReady() {
		to.release()
		<-l.mirrorSem
		l.stats.For(judged.v.Model, judged.v.ID).Dropped()
		return false
	}
	body.hold()
	return true
}

// sideRequest sends an admitted request to `to` in the background and
// records, on the stats of `judged`, how its prediction compares with the
// other side's. It releases what admit took.
func (l *Local) sideRequest(to, judged *process, in *http.Request, body *reqBody, served *response) {
	stats := l.stats.For(judged.v.Model, judged.v.ID)
	go func() {
		defer func() { <-l.mirrorSem }()
		defer to.release()
		defer body.drop()
		ctx, cancel := context.WithTimeout(l.ctx, 30*time.Second)
		defer cancel()
		start := time.Now()
		resp, err := l.forward(ctx, to, in, body.payload)
		shadow := to == judged // a mirror: the side request is the judged version's own traffic
		if err != nil {
			if shadow {
				stats.Observe(http.StatusBadGateway, time.Since(start))
			}
			stats.Compared(metrics.Failed)
			return
		}
		if shadow {
			stats.Observe(resp.code, time.Since(start))
			stats.Compared(Compare(resp.code, resp.body, served.code, served.body))
			return
		}
		stats.Compared(Compare(served.code, served.body, resp.code, resp.body))
	}()
}

// hopByHop reports headers that belong to one connection, not the request.
func hopByHop(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length":
		return true
	}
	return false
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	var body []byte
	if msg == "" {
		body = []byte("{}\n")
	} else {
		body, _ = json.Marshal(map[string]string{"error": msg})
		body = append(body, '\n')
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}
