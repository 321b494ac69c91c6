package local

import (
	"bufio"
	"bytes"
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

// do sends one request and reads the whole response. Predictions are
// idempotent, so a request that fails on a reused connection before any
// response byte arrived (the server closed it while idle, or restarted)
// is sent once more on a new connection.
func (u *upstream) do(ctx context.Context, method, uri string, header http.Header, body []byte) (*response, error) {
	req := encodeRequest(method, uri, u.addr, header, body)
	c := u.get()
	for {
		reused := c != nil
		if !reused {
			conn, err := dialer.DialContext(ctx, "tcp", u.addr)
			if err != nil {
				return nil, err
			}
			c = &upConn{Conn: conn, br: bufio.NewReaderSize(conn, 16<<10)}
		}
		resp, answered, err := c.roundTrip(ctx, req)
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

func (c *upConn) roundTrip(ctx context.Context, req []byte) (resp *response, gotBytes bool, err error) {
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() {
			err = errors.Join(err, ctx.Err())
			resp = nil
		}
	}()
	if _, err := c.Write(req); err != nil {
		return nil, false, err
	}
	if _, err := c.br.Peek(1); err != nil {
		return nil, false, err
	}
	hr, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, true, fmt.Errorf("read response: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(hr.Body, maxBody))
	hr.Body.Close()
	if err != nil {
		return nil, true, fmt.Errorf("read response: %w", err)
	}
	return &response{code: hr.StatusCode, header: hr.Header, body: data, keep: !hr.Close}, true, nil
}

// encodeRequest writes an HTTP/1.1 request with a known-length body.
func encodeRequest(method, path, host string, header http.Header, body []byte) []byte {
	b := bytes.NewBuffer(make([]byte, 0, 256+len(body)))
	b.WriteString(method)
	b.WriteByte(' ')
	b.WriteString(path)
	b.WriteString(" HTTP/1.1\r\nHost: ")
	b.WriteString(host)
	b.WriteString("\r\nContent-Length: ")
	b.WriteString(strconv.Itoa(len(body)))
	b.WriteString("\r\n")
	for k, vs := range header {
		if hopByHop(k) || k == "Host" || k == "Content-Length" {
			continue
		}
		for _, v := range vs {
			b.WriteString(k)
			b.WriteString(": ")
			b.WriteString(v)
			b.WriteString("\r\n")
		}
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}
