package local

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/servingtest"
)

// serveIris starts a local target with opts (quiet, short timeouts), serves
// the iris example at 100% and returns the router's URL once it answers.
func serveIris(t *testing.T, opts Options) (*Local, string) {
	t.Helper()
	requireSklearn(t)
	opts.StateDir, opts.Logger = t.TempDir(), slog.New(slog.DiscardHandler)
	opts.DrainTimeout, opts.StopTimeout = time.Second, 5*time.Second
	l, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	v := testVersion("iris", 1, irisModel(t))
	d := serving.Deployment{Model: "iris", Versions: []serving.Version{v}, Traffic: map[string]int{v.ID: 100}}
	if err := l.Apply(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 2*time.Minute, "iris ready", func() bool {
		ms := servingtest.StatusOf(t, l, "iris")
		return len(ms.Versions) == 1 && ms.Versions[0].Ready() && ms.Versions[0].Weight == 100
	})
	srv := httptest.NewServer(l)
	t.Cleanup(srv.Close)
	return l, srv.URL
}

// rawRequest writes head (request line and headers, without the blank
// line) and then body on a new connection, without closing it, and reads
// the answer: a router that answers has not waited for the rest of a body.
func rawRequest(t *testing.T, url, head string, body []byte) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(time.Minute)) // a router that waits for the body hangs: fail instead
	if _, err := io.WriteString(c, head+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read the answer with the body unfinished: %v", err)
	}
	return resp
}

// jsonError checks that resp is code with a JSON {"error": …} naming want.
func jsonError(t *testing.T, resp *http.Response, code int, want string) {
	t.Helper()
	var e struct{ Error string }
	err := json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode != code || err != nil || !strings.Contains(e.Error, want) ||
		resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("answer %d %q (%v, %s); want %d with an error naming %q", resp.StatusCode, e.Error, err,
			resp.Header.Get("Content-Type"), code, want)
	}
}

// TestRequestBodyLimit sends bodies over MaxRequestBytes: one whose
// Content-Length says so is refused before a byte of it is sent, a chunked
// one as soon as it passes the limit, while the client still holds it
// open; bodies within the limit are served.
func TestRequestBodyLimit(t *testing.T) {
	const limit = 4 << 10
	l, url := serveIris(t, Options{MaxRequestBytes: limit})
	resp, err := http.Post(url+"/v1/models/iris:predict", "application/json", strings.NewReader(irisBody))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a body within the limit: %d", resp.StatusCode)
	}

	t.Run("stated length", func(t *testing.T) {
		resp := rawRequest(t, url, "POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
			"Content-Length: 1073741824", nil)
		defer resp.Body.Close()
		jsonError(t, resp, http.StatusRequestEntityTooLarge, "larger than 4096 bytes")
		if !resp.Close {
			t.Error("the connection stays open after a refused body; want Connection: close")
		}
	})
	t.Run("chunked", func(t *testing.T) {
		chunk := fmt.Appendf(nil, "%x\r\n%s\r\n", limit+1, strings.Repeat("x", limit+1))
		resp := rawRequest(t, url, "POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
			"Transfer-Encoding: chunked", chunk)
		defer resp.Body.Close()
		jsonError(t, resp, http.StatusRequestEntityTooLarge, "larger than 4096 bytes")
	})
	t.Run("refusals are not the model's", func(t *testing.T) {
		snap := l.stats.For("iris", testVersion("iris", 1, "").ID).Snapshot(time.Now())
		if snap.Requests != 1 || snap.Errors != 0 {
			t.Errorf("iris counted %d requests, %d errors; want the 1 served, no errors", snap.Requests, snap.Errors)
		}
	})
}
