package local

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/servingtest"
)

// serveIris starts a local target with opts (quiet, short timeouts), serves
// the iris example at 100% (version 1; with mirror, every request mirrored
// to version 2) and returns the router's URL once it answers.
func serveIris(t *testing.T, opts Options, mirror bool) (*Local, string) {
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
	if mirror {
		m := testVersion("iris", 2, irisModel(t))
		d.Versions = append(d.Versions, m)
		d.Mirrors = []serving.Mirror{{Version: m.ID, Percent: 100}}
	}
	if err := l.Apply(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 2*time.Minute, "iris ready", func() bool {
		ms := servingtest.StatusOf(t, l, "iris")
		return len(ms.Versions) == len(d.Versions) && !slices.ContainsFunc(ms.Versions, func(v serving.VersionStatus) bool { return !v.Ready() })
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
	return readAnswer(t, startRequest(t, url, head, body))
}

// startRequest writes head and the start of a body on a new connection.
func startRequest(t *testing.T, url, head string, body []byte) net.Conn {
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
	return c
}

// readAnswer reads the answer to a request started on c.
func readAnswer(t *testing.T, c net.Conn) *http.Response {
	t.Helper()
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
	l, url := serveIris(t, Options{MaxRequestBytes: limit}, false)
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

// paddedIris is an iris request of n bytes: the JSON padded with spaces.
func paddedIris(n int) []byte {
	return append([]byte(irisBody), strings.Repeat(" ", n-len(irisBody))...)
}

// finish writes the rest of a started request and checks its answer.
func finish(t *testing.T, c net.Conn, rest []byte, code int) {
	t.Helper()
	if _, err := c.Write(rest); err != nil {
		t.Fatal(err)
	}
	resp := readAnswer(t, c)
	defer resp.Body.Close()
	if resp.StatusCode != code {
		t.Errorf("answer %d once the body is complete; want %d", resp.StatusCode, code)
	}
}

// busy checks a refusal for want of room: code, Retry-After and a JSON
// error naming the limit.
func busy(t *testing.T, resp *http.Response, code int, limit string) {
	t.Helper()
	defer resp.Body.Close()
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("%d without Retry-After", resp.StatusCode)
	}
	jsonError(t, resp, code, limit)
}

// TestModelConcurrencyLimit holds a model's only slot with a request whose
// body is half sent, queues one more, and sees the next refused with 429
// at once; the held and the queued one are then served, and the refusal
// counts on no version's stats.
func TestModelConcurrencyLimit(t *testing.T) {
	l, url := serveIris(t, Options{MaxConcurrency: 1, MaxQueue: 1, QueueTimeout: time.Hour}, false)
	gate := l.routes.Load().models["iris"].gate
	body := paddedIris(2 << 20) // streamed: held in flight while it arrives
	head := fmt.Sprintf("POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d", len(body))
	held := startRequest(t, url, head, body[:1<<20])
	poll.Until(t, 10*time.Second, "the first request in flight", func() bool { return gate.used.Load() == 1 })
	queued := startRequest(t, url, head, body[:1<<20])
	poll.Until(t, 10*time.Second, "the second request queued", func() bool { return gate.waiting.Load() == 1 })

	resp, err := http.Post(url+"/v1/models/iris:predict", "application/json", strings.NewReader(irisBody))
	if err != nil {
		t.Fatal(err)
	}
	busy(t, resp, http.StatusTooManyRequests, "local.maxConcurrency")

	finish(t, held, body[1<<20:], http.StatusOK)
	finish(t, queued, body[1<<20:], http.StatusOK)
	snap := l.stats.For("iris", testVersion("iris", 1, "").ID).Snapshot(time.Now())
	if snap.Requests != 2 || snap.Errors != 0 || snap.Client != 0 {
		t.Errorf("iris counted %d requests, %d errors, %d client errors; want the 2 served only", snap.Requests, snap.Errors, snap.Client)
	}
	if gate.used.Load() != 0 {
		t.Errorf("%d slots still taken after every request ended", gate.used.Load())
	}
}

// TestRequestBytesBudget spends the router's byte budget with a chunked
// body (which reserves the request limit while it is read), queues one
// more, and sees the next refused with 503 at once; once the first body
// is complete, both are served and the budget is whole again.
func TestRequestBytesBudget(t *testing.T) {
	const limit = 64 << 10
	l, url := serveIris(t, Options{MaxRequestBytes: limit, MaxBufferedBytes: limit, MaxQueue: 1, QueueTimeout: time.Hour}, false)
	head := "POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"
	chunk := fmt.Appendf(nil, "%x\r\n%s\r\n", len(irisBody), irisBody)
	held := startRequest(t, url, head, chunk)
	poll.Until(t, 10*time.Second, "the first body holding the budget", func() bool { return l.bytes.used.Load() == limit })
	queued := startRequest(t, url, head, chunk)
	poll.Until(t, 10*time.Second, "the second body queued", func() bool { return l.bytes.waiting.Load() == 1 })

	resp, err := http.Post(url+"/v1/models/iris:predict", "application/json", strings.NewReader(irisBody))
	if err != nil {
		t.Fatal(err)
	}
	busy(t, resp, http.StatusServiceUnavailable, "local.maxBufferedBytes")

	finish(t, held, []byte("0\r\n\r\n"), http.StatusOK)
	finish(t, queued, []byte("0\r\n\r\n"), http.StatusOK)
	if used := l.bytes.used.Load(); used != 0 {
		t.Errorf("%d bytes still counted after every request ended", used)
	}
}

// TestLargeBodiesStream sends bodies of every size class to a model with a
// mirror: one written with its head in one write, one too large for that
// (head, then body), one streamed as it arrives, and one as large but
// chunked (read into memory, its share of the byte budget growing with
// it). All are served; the three in memory are mirrored and compared, the
// streamed one's mirror is counted as dropped.
func TestLargeBodiesStream(t *testing.T) {
	l, url := serveIris(t, Options{}, true)
	for _, c := range []struct {
		n       int
		chunked bool
	}{{len(irisBody), false}, {100 << 10, false}, {3 << 20, false}, {3 << 20, true}} {
		var body io.Reader = bytes.NewReader(paddedIris(c.n))
		if c.chunked {
			body = io.MultiReader(body) // no length: sent chunked, read into memory
		}
		n := c.n
		resp, err := http.Post(url+"/v1/models/iris:predict", "application/json", body)
		if err != nil {
			t.Fatal(err)
		}
		var out struct{ Predictions []int }
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || len(out.Predictions) != 1 {
			t.Errorf("a body of %d bytes: %d %+v (%v); want 200 with one prediction", n, resp.StatusCode, out, err)
		}
	}
	shadow := l.stats.For("iris", testVersion("iris", 2, "").ID)
	poll.Until(t, 10*time.Second, "three mirrored requests compared", func() bool {
		return shadow.Snapshot(time.Now()).Agree == 3
	})
	if snap := shadow.Snapshot(time.Now()); snap.Dropped != 1 {
		t.Errorf("the shadow dropped %d requests; want the streamed one", snap.Dropped)
	}
	poll.Until(t, 10*time.Second, "the byte budget whole again", func() bool { return l.bytes.used.Load() == 0 })
}

// TestChunkedBodyOutgrowsBudget: a chunked body takes the byte budget as
// it grows, and one that outgrows what is left gets 503 at once, with the
// client still sending, while the body that holds the rest is served.
func TestChunkedBodyOutgrowsBudget(t *testing.T) {
	const limit = 128 << 10
	l, url := serveIris(t, Options{MaxRequestBytes: limit, MaxBufferedBytes: limit}, false)
	head := "POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"
	chunk := fmt.Appendf(nil, "%x\r\n%s\r\n", len(irisBody), irisBody)
	held := startRequest(t, url, head, chunk)
	poll.Until(t, 10*time.Second, "the first body holding its first grant", func() bool { return l.bytes.used.Load() == firstGrant })
	big := paddedIris(firstGrant + 1)
	resp := rawRequest(t, url, head, fmt.Appendf(nil, "%x\r\n%s\r\n", len(big), big))
	defer resp.Body.Close()
	busy(t, resp, http.StatusServiceUnavailable, "local.maxBufferedBytes")
	finish(t, held, []byte("0\r\n\r\n"), http.StatusOK)
	poll.Until(t, 10*time.Second, "the byte budget whole again", func() bool { return l.bytes.used.Load() == 0 })
}
