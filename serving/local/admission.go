package local

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// DefaultMaxRequestBytes is the default limit of a request body: far above
// what a prediction request needs, far below what would let a few clients
// exhaust the daemon's memory.
const DefaultMaxRequestBytes = 8 << 20

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

// readBody reads a request body of at most limit bytes into memory, with
// one allocation when the client states its length. A body without a
// stated length is cut off as soon as it passes the limit.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, nil
	}
	if r.ContentLength > limit {
		return nil, tooLargeError{limit}
	}
	if r.ContentLength > 0 {
		body := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return nil, fmt.Errorf("read request: %w", err)
		}
		return body, nil
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1)); err != nil {
		return nil, fmt.Errorf("read request: %w", err)
	}
	if int64(buf.Len()) > limit {
		return nil, tooLargeError{limit}
	}
	return buf.Bytes(), nil
}

// refuseBody answers a body that could not be read: 413 over the limit,
// else 400 (the client sent less than it said, or went away). The
// connection is closed after the answer: net/http would otherwise read
// the rest of the body first.
func refuseBody(w http.ResponseWriter, err error) {
	code := http.StatusBadRequest
	if errors.As(err, new(tooLargeError)) {
		code = http.StatusRequestEntityTooLarge
	}
	w.Header().Set("Connection", "close")
	writeJSONError(w, code, err.Error())
}
