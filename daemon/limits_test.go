package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/internal/gittest"
)

// TestListenerLimits runs a real daemon with small limits and checks, on
// the model router's listener and on the API's, that a client trickling a
// body is cut off, that oversized headers are refused, and that idle
// keep-alive connections cannot pile up beyond the connection cap.
func TestListenerLimits(t *testing.T) {
	repo := gittest.NewRepo(t)
	repo.Commit("empty", map[string]string{"README.md": "no models yet\n"})
	limits := Limits{ReadTimeout: 500 * time.Millisecond, IdleTimeout: time.Minute, MaxConns: 3}
	d := startDaemonWith(t, "limits", fmt.Sprintf(`repositories: [{name: models, url: %q, interval: 1s}]
local: {listen: "127.0.0.1:0", stateDir: %q}
server: {listen: "127.0.0.1:0"}
`, repo.Bare, t.TempDir()), Options{Limits: limits})
	for name, addr := range map[string]string{"models": d.d.ModelsAddr(), "api": d.d.APIAddr()} {
		t.Run(name, func(t *testing.T) {
			t.Run("slow body", func(t *testing.T) { slowBody(t, addr) })
			t.Run("large header", func(t *testing.T) { largeHeader(t, addr) })
			t.Run("connection cap", func(t *testing.T) { connectionCap(t, addr, limits.MaxConns) })
		})
	}
}

// slowBody sends headers announcing a body, one byte of it, and nothing
// more: the server must close the connection (within ReadTimeout; the
// test waits far longer before it calls that a hang).
func slowBody(t *testing.T, addr string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/models/iris:predict HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", addr)
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = io.ReadAll(c) // whatever the server answers, it must end the connection
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("a trickled body held the connection for %s", time.Since(start).Round(time.Millisecond))
	}
	t.Logf("connection with a stalled body closed after %s", time.Since(start).Round(time.Millisecond))
}

// largeHeader sends 100 KiB of headers: 431.
func largeHeader(t *testing.T, addr string) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/healthz", nil)
	req.Header.Set("X-Padding", strings.Repeat("x", 100<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("100 KiB of headers: %d, want 431", resp.StatusCode)
	}
}

// connectionCap holds max keep-alive connections open after one request
// each; one more connection is not served until one of them closes.
func connectionCap(t *testing.T, addr string, maxConns int) {
	get := func(c net.Conn, r *bufio.Reader) error {
		fmt.Fprintf(c, "GET /v1/models/none HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range maxConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		if err := get(c, bufio.NewReader(c)); err != nil {
			t.Fatal(err)
		}
	}
	extra, err := net.Dial("tcp", addr) // the kernel accepts it; the daemon does not serve it yet
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	answered := make(chan error, 1)
	go func() { answered <- get(extra, bufio.NewReader(extra)) }()
	select {
	case err := <-answered:
		t.Fatalf("connection %d beyond the cap of %d was served (err %v)", maxConns+1, maxConns, err)
	case <-time.After(300 * time.Millisecond):
	}
	held[0].Close()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("once a connection closed, the waiting one failed: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("once a connection closed, the waiting one was still not served")
	}
}
