// Package promtest runs a real Prometheus server for tests: Debian's
// /usr/bin/prometheus with a temporary config scraping one target every
// second and its TSDB in t.TempDir().
package promtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// Job is the scrape job's name.
const Job = "merlin"

// Server is a running Prometheus.
type Server struct {
	// URL is the HTTP API's base, e.g. http://127.0.0.1:40123.
	URL string
	api v1.API
	log string
}

// Binary returns the Prometheus binary, or skips the test — or fails it
// when CI=true, where test-deps.sh must have installed it.
func Binary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("prometheus"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/prometheus"); err == nil {
		return "/usr/bin/prometheus"
	}
	msg := "prometheus binary not found: apt-get install prometheus (hack/test-deps.sh)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// Start runs Prometheus scraping target (host:port, path /metrics) every
// second, and stops it when the test ends.
func Start(t testing.TB, target string) *Server {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: %s
    static_configs: [{targets: [%q]}]
`, Job, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// Prometheus cannot listen on port 0 and tell us the port: pick a
	// free one, and try again should another process take it first.
	for attempt := 0; ; attempt++ {
		addr := freeAddr(t)
		s := &Server{URL: "http://" + addr, log: filepath.Join(dir, fmt.Sprintf("prometheus-%d.log", attempt))}
		logf, err := os.Create(s.log)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
			"--web.listen-address="+addr, "--log.level=warn")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			t.Fatalf("start prometheus: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait(); logf.Close() }()
		err = s.waitReady(exited)
		if err == nil {
			t.Cleanup(func() {
				_ = cmd.Process.Signal(syscall.SIGTERM)
				var err error
				select {
				case err = <-exited:
				case <-time.After(10 * time.Second):
					_ = cmd.Process.Kill()
					err = <-exited
				}
				t.Logf("prometheus exited: %v", err)
			})
			c, err := api.NewClient(api.Config{Address: s.URL})
			if err != nil {
				t.Fatal(err)
			}
			s.api = v1.NewAPI(c)
			return s
		}
		_ = cmd.Process.Kill()
		t.Logf("prometheus exited: %v", <-exited)
		if attempt == 2 {
			t.Fatalf("prometheus did not start: %v\n%s", err, s.tail())
		}
	}
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (s *Server) waitReady(exited <-chan error) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("prometheus exited: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := http.Get(s.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("prometheus at %s not ready after 60s", s.URL)
}

func (s *Server) tail() string {
	b, _ := os.ReadFile(s.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

// Settle waits until Prometheus has stored a scrape of the target that
// began after the call, so everything the target exposed before the call
// is queryable. It returns within half a scrape interval of that scrape,
// so that a window starting right after it cannot be overtaken by a
// scrape that began before its start (which could include requests made
// after it).
func (s *Server) Settle(t testing.TB) {
	t.Helper()
	t0 := time.Now()
	deadline := t0.Add(60 * time.Second)
	for time.Now().Before(deadline) {
		last, err := s.lastScrape()
		if err == nil && last.After(t0) && time.Since(last) < 500*time.Millisecond {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("prometheus did not scrape %s within 60s\n%s", Job, s.tail())
}

// lastScrape is the time of the newest stored successful scrape of the
// job.
func (s *Server) lastScrape() (time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, _, err := s.api.Query(ctx, fmt.Sprintf(`timestamp(up{job=%[1]q}) and up{job=%[1]q} == 1`, Job), time.Now())
	if err != nil {
		return time.Time{}, err
	}
	vec, ok := v.(model.Vector)
	if !ok || len(vec) == 0 {
		return time.Time{}, fmt.Errorf("no successful scrape yet")
	}
	sec := float64(vec[0].Value)
	return time.UnixMilli(int64(sec*1000 + 0.5)), nil
}
