package local

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// upstream is a keep-alive HTTP/1.1 client for one model server, the
// router's hot path. net/http's Transport hands every request between a
// caller, a write loop and a read loop goroutine; on a loopback hop of
// ~200µs those handoffs are a measurable share of the router's overhead.
// Here the caller's goroutine writes the request with one write and reads
// the response itself, on a pooled connection.
type upstream struct {
	addr string

	mu   sync.Mutex
	idle []*upConn
}

type upConn struct {
	net.Conn
	br *bufio.Reader
}

// maxIdle bounds the idle connections kept per model server.
const maxIdle = 64

func (u *upstream) get() *upConn {
	u.mu.Lock()
	defer u.mu.Unlock()
	if n := len(u.idle); n > 0 {
		c := u.idle[n-1]
		u.idle = u.idle[:n-1]
		return c
	}
	return nil
}

func (u *upstream) put(c *upConn) {
	u.mu.Lock()
	if len(u.idle) < maxIdle {
		u.idle = append(u.idle, c)
		c = nil
	}
	u.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// closeIdle closes the pooled connections, e.g. when the server stops.
func (u *upstream) closeIdle() {
	u.mu.Lock()
	idle := u.idle
	u.idle = nil
	u.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

var dialer = net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}

// payload is a request body: bytes in memory, or a stream of n bytes
// (the client's body, copied as it arrives) that can be sent only once.
type payload struct {
	data   []byte
	stream io.Reader
	n      int64
}

func bytesPayload(b []byte) payload { return payload{data: b, n: int64(len(b))} }

// oneWrite is the largest request written with one write. Header and body
// in separate segments would make a small request wait for the model
// server's delayed ACK (~40 ms); a larger body fills segments anyway, and
// concatenating it would copy it.
const oneWrite = 64 << 10

// copyBufs are the buffers streamed bodies are copied through.
var copyBufs = sync.Pool{New: func() any { return new([streamChunk]byte) }}

// streamChunk is the buffer a streamed body is copied through, and what a
// streamed body is charged in the router's byte budget.
const streamChunk = 32 << 10

// do sends one request and reads the whole response. Predictions are
// idempotent, so a request that fails on a reused connection before any
// response byte arrived (the server closed it while idle, or restarted)
// is sent once more on a new connection. A streamed body cannot be sent
// twice: it goes on a new connection.
func (u *upstream) do(ctx context.Context, method, uri string, header http.Header, body payload) (*response, error) {
	req := encodeRequest(method, uri, u.addr, header, body)
	defer req.free()
	var c *upConn
	if body.stream == nil {
		c = u.get()
	}
	for {
		reused := c != nil
		if !reused {
			conn, err := dialer.DialContext(ctx, "tcp", u.addr)
			if err != nil {
				return nil, err
			}
			c = &upConn{Conn: conn, br: bufio.NewReaderSize(conn, 16<<10)}
		}
		resp, answered, err := c.roundTrip(ctx, &req)
		if err == nil {
			if resp.keep {
				u.put(c)
			} else {
				c.Close()
			}
			return resp, nil
		}
		c.Close()
		if !reused || answered || ctx.Err() != nil {
			return nil, err
		}
		c = nil // a stale pooled connection: once more on a new one
	}
}

func (c *upConn) roundTrip(ctx context.Context, req *request) (resp *response, gotBytes bool, err error) {
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() {
			err = errors.Join(err, ctx.Err())
			resp = nil
		}
	}()
	if werr := req.write(c.Conn); werr != nil {
		// A server may answer before it reads the whole body (413) and
		// close: its answer is the one to pass on. A stale connection
		// has none.
		if _, err := c.br.Peek(1); err != nil {
			return nil, false, werr
		}
		resp, err := readResponse(c.br)
		if resp != nil {
			resp.keep = false
		}
		return resp, true, err
	}
	if _, err := c.br.Peek(1); err != nil {
		return nil, false, err
	}
	resp, err = readResponse(c.br)
	return resp, true, err
}

func readResponse(br *bufio.Reader) (*response, error) {
	hr, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(hr.Body, maxBody))
	hr.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	return &response{code: hr.StatusCode, header: hr.Header, body: data, keep: !hr.Close}, nil
}

// request is an encoded request: its head, with the body appended when
// the whole fits in one write, in a pooled buffer.
type request struct {
	buf  *[]byte
	body payload // what is not in buf
}

var requestBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

func (r *request) free() {
	if cap(*r.buf) <= oneWrite+4<<10 { // keep the pool's buffers small
		*r.buf = (*r.buf)[:0]
		requestBufs.Put(r.buf)
	}
}

// write sends the request: one write when it fits, else the head and then
// the body, streamed bodies through a pooled buffer.
func (r *request) write(w io.Writer) error {
	if _, err := w.Write(*r.buf); err != nil {
		return err
	}
	switch {
	case r.body.stream != nil:
		buf := copyBufs.Get().(*[streamChunk]byte)
		defer copyBufs.Put(buf)
		// Through a plain io.Writer: a *net.TCPConn's ReadFrom would
		// allocate a buffer of its own for a reader that is not a socket.
		n, err := io.CopyBuffer(struct{ io.Writer }{w}, io.LimitReader(r.body.stream, r.body.n), buf[:])
		if err == nil && n < r.body.n {
			err = io.ErrUnexpectedEOF
		}
		return err
	case len(r.body.data) > 0:
		_, err := w.Write(r.body.data)
		return err
	}
	return nil
}

// encodeRequest writes an HTTP/1.1 request with a known-length body.
func encodeRequest(method, path, host string, header http.Header, body payload) request {
	bp := requestBufs.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, body.n, 10)
	b = append(b, "\r\n"...)
	for k, vs := range header {
		if hopByHop(k) || k == "Host" || k == "Content-Length" {
			continue
		}
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	b = append(b, "\r\n"...)
	if body.stream == nil && len(b)+len(body.data) <= oneWrite {
		b = append(b, body.data...)
		body = payload{}
	}
	*bp = b
	return request{buf: bp, body: body}
}
