package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Path is where GitHub delivers (SPEC §3).
const Path = "/hooks/github"

// Handler defaults.
const (
	// MaxBodyBytes is GitHub's cap on a payload (25 MB): it does not send
	// larger ones, so a larger body is not GitHub's.
	MaxBodyBytes = 25 << 20
	// DefaultQueue is how many events may wait for the Sink.
	DefaultQueue = 256
	// RetryAfter is what a full queue asks GitHub to wait, in seconds.
	RetryAfter = 10
)

// Options configure a Handler.
type Options struct {
	// Repos are the repositories deliveries are accepted for.
	Repos []Repo
	// Deliveries remembers delivery ids (required).
	Deliveries *Deliveries
	// Queue bounds the events waiting for the Sink (DefaultQueue when 0).
	Queue int
	// MaxBodyBytes overrides MaxBodyBytes (tests).
	MaxBodyBytes int64
	Logger       *slog.Logger
}

// delivery is a queued event.
type delivery struct {
	ev Event
}

// Handler serves POST /hooks/github. Run delivers what it queues.
type Handler struct {
	opts    Options
	secrets [][]byte // distinct, in the order of Repos
	queue   chan delivery
	qmu     sync.Mutex // makes a delivery's events go on the queue all or none
	log     *slog.Logger
	now     func() time.Time
}

// New returns a Handler.
func New(opts Options) (*Handler, error) {
	if opts.Deliveries == nil {
		return nil, errors.New("webhooks: Options.Deliveries is required")
	}
	h := &Handler{opts: opts, log: opts.Logger, now: time.Now}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.opts.MaxBodyBytes <= 0 {
		h.opts.MaxBodyBytes = MaxBodyBytes
	}
	if h.opts.Queue <= 0 {
		h.opts.Queue = DefaultQueue
	}
	h.queue = make(chan delivery, h.opts.Queue)
	for _, r := range opts.Repos {
		if len(r.Secret) == 0 {
			return nil, errors.New("webhooks: repository " + r.Name + " has no webhook secret")
		}
		known := false
		for _, s := range h.secrets {
			known = known || string(s) == string(r.Secret)
		}
		if !known {
			h.secrets = append(h.secrets, r.Secret)
		}
	}
	return h, nil
}

// Run hands queued events to sink, one at a time, until ctx ends. Events
// still queued then are dropped: GitHub was answered, and the poll (every
// repository's interval) catches what they would have triggered.
func (h *Handler) Run(ctx context.Context, sink Sink) {
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-h.queue:
			d.ev.deliver(ctx, sink)
		}
	}
}

// ServeHTTP answers a delivery: verify, decide, deduplicate, queue.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	received := h.now()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		reply(w, http.StatusMethodNotAllowed, "error", "webhooks are delivered with POST")
		return
	}
	if r.ContentLength > h.opts.MaxBodyBytes {
		reply(w, http.StatusRequestEntityTooLarge, "error", "payload over "+strconv.FormatInt(h.opts.MaxBodyBytes, 10)+" bytes")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			reply(w, http.StatusRequestEntityTooLarge, "error", "payload over "+strconv.FormatInt(h.opts.MaxBodyBytes, 10)+" bytes")
			return
		}
		reply(w, http.StatusBadRequest, "error", "read body: "+err.Error())
		return
	}
	id, kind := r.Header.Get("X-GitHub-Delivery"), r.Header.Get("X-GitHub-Event")
	i, err := Verify(r.Header.Get("X-Hub-Signature-256"), body, h.secrets)
	if err != nil {
		h.log.Warn("webhook refused", "delivery", id, "event", kind, "err", err, "remote", r.RemoteAddr)
		reply(w, http.StatusUnauthorized, "error", err.Error())
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		reply(w, http.StatusUnsupportedMediaType, "error", "set the webhook's content type to application/json")
		return
	}
	if kind == "" {
		reply(w, http.StatusBadRequest, "error", "no X-GitHub-Event header")
		return
	}
	dec, err := Decide(kind, body, h.secrets[i], h.opts.Repos, Meta{Delivery: id, Received: received})
	switch {
	case err != nil:
		reply(w, http.StatusBadRequest, "error", err.Error())
		return
	case dec.Ping:
		h.log.Info("webhook ping", "delivery", id)
		reply(w, http.StatusOK, "status", "pong")
		return
	case len(dec.Events) == 0:
		h.log.Info("webhook ignored", "delivery", id, "event", kind, "reason", dec.Ignored)
		reply(w, http.StatusOK, "ignored", dec.Ignored)
		return
	}
	h.enqueue(w, id, kind, dec.Events)
}

// enqueue deduplicates and queues a delivery's events without blocking.
func (h *Handler) enqueue(w http.ResponseWriter, id, kind string, events []Event) {
	fresh, err := h.opts.Deliveries.Add(id)
	switch {
	case err != nil && !fresh:
		reply(w, http.StatusBadRequest, "error", err.Error())
		return
	case err != nil:
		// Remembered in memory, not on disk: act now; a restart may act twice.
		h.log.Warn("webhook delivery not recorded", "delivery", id, "err", err)
	case !fresh:
		h.log.Info("webhook redelivered: already acted on", "delivery", id, "event", kind)
		reply(w, http.StatusOK, "status", "duplicate delivery "+id+": already handled")
		return
	}
	h.qmu.Lock()
	defer h.qmu.Unlock()
	if len(events) > cap(h.queue)-len(h.queue) {
		if err := h.opts.Deliveries.Forget(id); err != nil {
			h.log.Warn("webhook delivery not forgotten", "delivery", id, "err", err)
		}
		h.log.Warn("webhook queue full: asked GitHub to retry", "delivery", id, "event", kind)
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfter))
		reply(w, http.StatusServiceUnavailable, "error", "busy: retry later")
		return
	}
	for _, ev := range events {
		h.queue <- delivery{ev: ev} // room checked under qmu: never blocks
	}
	h.log.Info("webhook queued", "delivery", id, "event", kind, "events", len(events))
	reply(w, http.StatusAccepted, "status", "queued")
}

func reply(w http.ResponseWriter, code int, key, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{key: msg})
}
