package local

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/local/modelserver"
)

const irisBody = `{"instances": [[6.3, 3.3, 6.0, 2.5]]}`

// BenchmarkRouterOverhead prints what the router costs: an iris predict at
// concurrency 1 straight to the model server and through the router,
// interleaved in one run so both see the same machine, then throughput at
// higher concurrency with wrk. Run it with -benchtime 1x (make bench).
func BenchmarkRouterOverhead(b *testing.B) {
	if _, err := exec.Command(modelserver.DefaultPython, "-c", "import numpy, sklearn, cloudpickle").CombinedOutput(); err != nil {
		b.Skipf("SKIPPING: %s cannot import sklearn: %v", modelserver.DefaultPython, err)
	}
	for _, workers := range []int{1, 2} {
		direct, routed := benchDeploy(b, workers)
		if workers == 1 {
			// A plain TCP relay (no HTTP parsing, two io.Copy loops) in
			// front of the same server is the floor any user-space hop
			// pays on this machine: the router is judged against it too.
			relayed := tcpRelay(b, direct)
			const rounds, each = 5, 2 * time.Second
			var d, r, x []time.Duration
			var dn, rn, xn time.Duration
			for range rounds {
				lat, took := loadC1(b, direct, each)
				d, dn = append(d, lat...), dn+took
				lat, took = loadC1(b, routed, each)
				r, rn = append(r, lat...), rn+took
				lat, took = loadC1(b, relayed, each)
				x, xn = append(x, lat...), xn+took
			}
			drps, rrps := float64(len(d))/dn.Seconds(), float64(len(r))/rn.Seconds()
			fmt.Printf("\nrouter overhead: iris predict, 1 model-server worker, concurrency 1, %d×%s interleaved\n", rounds, each)
			fmt.Printf("  %-8s %9s %9s %9s\n", "", "req/s", "p50", "p99")
			fmt.Printf("  %-8s %9.0f %9s %9s\n", "direct", drps, q(d, 0.50), q(d, 0.99))
			fmt.Printf("  %-8s %9.0f %9s %9s   (TCP byte relay, no HTTP: the floor of any proxy hop)\n", "relay", float64(len(x))/xn.Seconds(), q(x, 0.50), q(x, 0.99))
			fmt.Printf("  %-8s %9.0f %9s %9s\n", "router", rrps, q(r, 0.50), q(r, 0.99))
			fmt.Printf("  %-8s %8.3f× %9s %9s   (targets: ≥ 0.95× throughput, ≤ +150µs p99)\n", "router/direct",
				rrps/drps, "+"+(q(r, 0.50)-q(d, 0.50)).String(), "+"+(q(r, 0.99)-q(d, 0.99)).String())
			b.ReportMetric(rrps/drps, "router/direct")
			b.ReportMetric(float64((q(r, 0.99) - q(d, 0.99)).Microseconds()), "Δp99-µs")
		}
		if _, err := exec.LookPath("wrk"); err != nil {
			fmt.Println("  (wrk not installed: no throughput figures; apt-get install wrk)")
			continue
		}
		fmt.Printf("\nthroughput with wrk (2 threads, 16 connections, 5 s), model server with %d worker(s):\n", workers)
		for _, t := range []struct{ name, url string }{{"direct", direct}, {"router", routed}} {
			rps, p99 := wrk(b, t.url)
			fmt.Printf("  %-8s %9.0f req/s   p99 %s\n", t.name, rps, p99)
		}
	}
	fmt.Println("  (client, router and model server share this machine's cores)")
}

// benchDeploy serves the iris example on a fresh local target and returns
// the model server's own predict URL and the router's.
func benchDeploy(b *testing.B, workers int) (direct, routed string) {
	model, err := filepath.Abs("../../examples/iris-sklearn/model")
	if err != nil {
		b.Fatal(err)
	}
	l, err := New(Options{StateDir: b.TempDir(), Workers: workers})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	v := serving.Version{ID: "iris-0000000" + strconv.Itoa(workers), Model: "iris", Digest: "0000000" + strconv.Itoa(workers),
		Type: manifest.TypeSKLearn, Protocol: manifest.ProtocolV1, Bundle: model}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := l.Apply(ctx, serving.Deployment{Model: "iris", Versions: []serving.Version{v}, Traffic: map[string]int{v.ID: 100}}); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: l, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	routed = "http://" + ln.Addr().String() + "/v1/models/iris:predict"
	// The first request through the router waits for the server to start.
	if _, err := predictOnce(http.DefaultClient, routed); err != nil {
		b.Fatal(err)
	}
	st, _ := l.Status(ctx)
	return "http://" + st[0].Versions[0].Endpoint + "/v1/models/iris:predict", routed
}

func predictOnce(c *http.Client, url string) (time.Duration, error) {
	start := time.Now()
	resp, err := c.Post(url, "application/json", bytes.NewReader([]byte(irisBody)))
	if err != nil {
		return 0, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err == nil && (resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"predictions": [2]`))) {
		err = fmt.Errorf("%s: %d %s", url, resp.StatusCode, body)
	}
	return took, err
}

// loadC1 sends requests one after another over one keep-alive connection.
func loadC1(b *testing.B, url string, d time.Duration) ([]time.Duration, time.Duration) {
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer c.CloseIdleConnections()
	if _, err := predictOnce(c, url); err != nil { // open the connection
		b.Fatal(err)
	}
	var lat []time.Duration
	start := time.Now()
	for time.Since(start) < d {
		took, err := predictOnce(c, url)
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, took)
	}
	return lat, time.Since(start)
}

func q(lat []time.Duration, p float64) time.Duration {
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))].Round(time.Microsecond)
}

var (
	wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkP99 = regexp.MustCompile(`\s99%\s+([0-9.]+)(us|ms|s)`)
)

func wrk(b *testing.B, url string) (float64, string) {
	script := filepath.Join(b.TempDir(), "post.lua")
	lua := fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = %q\nwrk.headers[\"Content-Type\"] = \"application/json\"\n", irisBody)
	if err := os.WriteFile(script, []byte(lua), 0o644); err != nil {
		b.Fatal(err)
	}
	out, err := exec.Command("wrk", "-t2", "-c16", "-d5s", "--latency", "-s", script, url).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v\n%s", err, out)
	}
	if bytes.Contains(out, []byte("Non-2xx")) || bytes.Contains(out, []byte("Socket errors")) {
		b.Fatalf("wrk saw errors:\n%s", out)
	}
	m, p := wrkRPS.FindSubmatch(out), wrkP99.FindSubmatch(out)
	if m == nil || p == nil {
		b.Fatalf("cannot read wrk output:\n%s", out)
	}
	rps, _ := strconv.ParseFloat(string(m[1]), 64)
	return rps, string(p[1]) + string(p[2])
}

// tcpRelay forwards bytes between each accepted connection and target's
// host:port, and returns url rewritten to go through it.
func tcpRelay(b *testing.B, url string) string {
	host := strings.TrimPrefix(url, "http://")
	host = host[:strings.IndexByte(host, '/')]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", host)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c) }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
	return strings.Replace(url, host, ln.Addr().String(), 1)
}
