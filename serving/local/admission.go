package local

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
)

// DefaultMaxRequestBytes is the default limit of a request body: far above
// what a prediction request needs, far below what would let a few clients
// exhaust the daemon's memory.
const DefaultMaxRequestBytes = 8 << 20

// Defaults of the router's other limits (see Options).
const (
	DefaultMaxBufferedBytes = 64 << 20
	DefaultMaxConcurrency   = 64
	DefaultMaxQueue         = 64
)

// streamAbove is the largest body read into memory before it is sent:
// a longer one, with its length stated, is streamed to the model server
// as it arrives, so that it costs the router a copy buffer, not its size.
// Only bodies in memory can be mirrored and compared: they are still
// there after the client's request ends.
const streamAbove = 1 << 20

// reqBody is an admitted request's body and what its admission took: a
// slot of its model and bytes of the router's budget. The bytes are given
// back when the client's request and every side request holding the body
// are done.
type reqBody struct {
	payload
	l      *Local
	gate   *limiter // the model's slot, given back by end
	charge int64    // bytes of l.bytes
	refs   atomic.Int32
	client *clientReader // a streamed body, as read from the client
}

// hold keeps the body for a side request, which drops it when done.
func (b *reqBody) hold() { b.refs.Add(1) }

func (b *reqBody) drop() {
	if b.refs.Add(-1) == 0 && b.charge > 0 {
		b.l.bytes.release(b.charge)
	}
}

// end is the end of the client's request.
func (b *reqBody) end() {
	if b.gate != nil {
		b.gate.release(1)
		b.gate = nil
	}
	b.drop()
}

// clientReader remembers why a streamed client body could not be read:
// a failed forward is then the client's fault, not the model server's.
type clientReader struct {
	r   io.Reader
	err error
}

func (c *clientReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// admitRequest admits a request to model, or answers it with a refusal
// and returns nil. A request whose stated length is over the limit gets
// 413 at once; then it takes a slot of its model (429 when MaxConcurrency
// are in flight and MaxQueue wait, or after QueueTimeout), then the bytes
// its body will hold in memory (503 when the router's budget stays
// spent): its length when it is read into memory, a growing share while
// a body of unknown length is read (readGrowing), a copy buffer when it is
// streamed.
// Refusals happen before a version is picked: they count on no version's
// stats, so a client's excess never weighs on a canary's analysis.
func (l *Local) admitRequest(w http.ResponseWriter, r *http.Request, model string) *reqBody {
	if l.refuseLength(w, r) {
		return nil
	}
	b := &reqBody{l: l}
	b.refs.Store(1)
	if mr := l.routes.Load().models[model]; mr != nil && mr.gate != nil {
		if err := mr.gate.acquire(r.Context(), 1, l.opts.QueueTimeout); err != nil {
			refuseBusy(w, http.StatusTooManyRequests, fmt.Sprintf(
				"model %q is busy: %d requests in flight (local.maxConcurrency), %v", model, mr.gate.limit, err))
			return nil
		}
		b.gate = mr.gate
	}
	n := r.ContentLength
	charge := n
	switch {
	case r.Body == nil || r.Body == http.NoBody || n == 0:
		charge = 0
	case n > streamAbove:
		charge = streamChunk
	case n < 0:
		charge = min(firstGrant, l.opts.MaxRequestBytes)
	}
	if charge > 0 {
		if err := l.bytes.acquire(r.Context(), charge, l.opts.QueueTimeout); err != nil {
			b.end()
			refuseBusy(w, http.StatusServiceUnavailable, fmt.Sprintf(
				"the router holds %d bytes of request bodies (local.maxBufferedBytes), %v", l.bytes.limit, err))
			return nil
		}
		b.charge = charge
	}
	if n > streamAbove {
		b.client = &clientReader{r: r.Body}
		b.payload = payload{stream: b.client, n: n}
		return b
	}
	var data []byte
	var err error
	if n < 0 {
		data, err = b.readGrowing(r.Body, l.opts.MaxRequestBytes)
	} else {
		data, err = readBody(r, l.opts.MaxRequestBytes)
	}
	if err != nil {
		b.end()
		refuseBody(w, err)
		return nil
	}
	if n < 0 && b.charge > int64(len(data)) { // keep what the body holds
		l.bytes.release(b.charge - int64(len(data)))
		b.charge = int64(len(data))
	}
	b.payload = bytesPayload(data)
	return b
}

// firstGrant is what a body of unknown length takes of the byte budget
// first; it takes twice as much whenever it fills what it has.
const firstGrant = 64 << 10

// errBudget is a body of unknown length that outgrew what the byte budget
// had left.
var errBudget = errors.New("the router holds too many bytes of request bodies (local.maxBufferedBytes)")

// readGrowing reads a body of unknown length, holding no more of it than
// the budget granted b: when it fills its grant, the grant doubles if the
// budget has room now (no wait: two bodies waiting for each other's bytes
// would wait forever), else the body is refused with errBudget.
func (b *reqBody) readGrowing(body io.Reader, limit int64) ([]byte, error) {
	var buf bytes.Buffer
	for {
		if room := b.charge - int64(buf.Len()); room > 0 {
			_, err := io.CopyN(&buf, body, room)
			if errors.Is(err, io.EOF) {
				return buf.Bytes(), nil
			}
			if err != nil {
				return nil, fmt.Errorf("read request: %w", err)
			}
			continue
		}
		if b.charge >= limit { // one byte more is one too many
			var one [1]byte
			switch _, err := io.ReadFull(body, one[:]); {
			case errors.Is(err, io.EOF):
				return buf.Bytes(), nil
			case err != nil:
				return nil, fmt.Errorf("read request: %w", err)
			}
			return nil, tooLargeError{limit}
		}
		more := min(b.charge, limit-b.charge)
		if !b.l.bytes.tryAcquire(more) {
			return nil, errBudget
		}
		b.charge += more
	}
}

// refuseBusy answers a request the router has no room for now; it may be
// sent again in a second. The connection is closed, as its body was not
// read.
func refuseBusy(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Retry-After", "1")
	w.Header().Set("Connection", "close")
	writeJSONError(w, code, msg)
}

// failedCode is the status of a request whose model server did not
// answer: 502, unless the client went away (499) or its streamed body
// could not be read (400) — neither is the model's fault.
func failedCode(r *http.Request, b *reqBody) int {
	switch {
	case r.Context().Err() != nil:
		return 499
	case b.client != nil && b.client.err != nil:
		return http.StatusBadRequest
	}
	return http.StatusBadGateway
}

// gateLocked is model's limiter of requests in flight, kept across route
// tables. The caller holds l.mu.
func (l *Local) gateLocked(model string) *limiter {
	g := l.gates[model]
	if g == nil {
		g = newLimiter(int64(l.opts.MaxConcurrency), max(l.opts.MaxQueue, 0))
		l.gates[model] = g
	}
	return g
}

// tooLargeError is a request body over Options.MaxRequestBytes.
type tooLargeError struct{ limit int64 }

func (e tooLargeError) Error() string {
	return fmt.Sprintf("request body larger than %d bytes (local.maxRequestBytes)", e.limit)
}

// refuseLength answers 413 to a request whose stated Content-Length is
// over the limit, without reading its body. The connection is closed
// after the answer: draining the body would cost what the limit saves.
func (l *Local) refuseLength(w http.ResponseWriter, r *http.Request) bool {
	if r.ContentLength <= l.opts.MaxRequestBytes {
		return false
	}
	w.Header().Set("Connection", "close")
	writeJSONError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf(
		"request body of %d bytes is larger than %d bytes (local.maxRequestBytes)", r.ContentLength, l.opts.MaxRequestBytes))
	return true
}

// readBody reads a request body of stated length, at most limit bytes,
// into memory with one allocation.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength <= 0 {
		return nil, nil
	}
	if r.ContentLength > limit {
		return nil, tooLargeError{limit}
	}
	body := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, body); err != nil {
		return nil, fmt.Errorf("read request: %w", err)
	}
	return body, nil
}

// refuseBody answers a body that could not be read: 413 over the limit,
// else 400 (the client sent less than it said, or went away). The
// connection is closed after the answer: net/http would otherwise read
// the rest of the body first.
func refuseBody(w http.ResponseWriter, err error) {
	code := http.StatusBadRequest
	switch {
	case errors.As(err, new(tooLargeError)):
		code = http.StatusRequestEntityTooLarge
	case errors.Is(err, errBudget):
		code = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Connection", "close")
	writeJSONError(w, code, err.Error())
}
