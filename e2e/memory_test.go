package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"merlin.dev/merlin/internal/gittest"
)

// memFigures are a merlin process's memory around a burst of large
// prediction requests, from /proc/PID/status.
type memFigures struct {
	idleRSS, peakRSS int64 // bytes: VmRSS before, VmHWM over the burst
	codes            map[int]int
	errs             []string // of requests without an answer (code 0)
}

func (f memFigures) String() string {
	return fmt.Sprintf("idle RSS %.0f MB, peak RSS %.0f MB (%.2f× idle), answers %v %s",
		mb(f.idleRSS), mb(f.peakRSS), float64(f.peakRSS)/float64(f.idleRSS), f.codes, strings.Join(f.errs, "; "))
}

func mb(n int64) float64 { return float64(n) / 1e6 }

// procStatus reads a field of /proc/PID/status in bytes (they are in kB).
func procStatus(t testing.TB, pid int, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s of %d: %q", field, pid, line)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// largeBurst serves the iris example from a `merlin run` whose config's
// local block has the extra fields localExtra, and sends it n concurrent
// predictions of size bytes each (valid iris requests padded with
// spaces). It returns the daemon's RSS when idle (after a few small
// requests) and its peak over the burst: the peak is reset
// (/proc/PID/clear_refs) after the idle reading, so that it is the
// burst's.
func largeBurst(t testing.TB, localExtra string, n, size int) memFigures {
	t.Helper()
	requirePython(t)
	repo := gittest.NewRepo(t)
	repo.CommitDir("add iris", examplesDir(model), "models/"+model)
	m := newMerlin(t, repo.Bare)
	if localExtra != "" {
		cfg, err := os.ReadFile(m.config)
		if err != nil {
			t.Fatal(err)
		}
		cfg = bytes.Replace(cfg, []byte("local: {"), []byte("local: {"+localExtra+", "), 1)
		if err := os.WriteFile(m.config, cfg, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m.start()
	m.waitServing("iris to serve", model)
	for range 20 {
		if _, err := m.predict(model, irisRows); err != nil {
			t.Fatal(err)
		}
	}
	pid := m.cmd.Process.Pid
	f := memFigures{idleRSS: procStatus(t, pid, "VmRSS"), codes: map[int]int{}}
	if err := os.WriteFile(filepath.Join("/proc", strconv.Itoa(pid), "clear_refs"), []byte("5"), 0); err != nil {
		t.Fatalf("reset the peak RSS of merlin: %v", err)
	}

	body := []byte(`{"instances": [[6.3, 3.3, 6.0, 2.5]]}`)
	body = append(body, bytes.Repeat([]byte(" "), size-len(body))...)
	url := m.models + "/v1/models/" + model + ":predict"
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			code := 0 // no answer
			// No client timeout: the daemon's own (a whole request within
			// 60 s) is what applies.
			resp, err := http.Post(url, "application/json", bytes.NewReader(body))
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				code = resp.StatusCode
			}
			mu.Lock()
			f.codes[code]++
			if err != nil {
				f.errs = append(f.errs, err.Error())
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	f.peakRSS = procStatus(t, pid, "VmHWM")
	return f
}

// TestLargeRequestsMemory sends 10 concurrent 60 MB predictions to a real
// daemon, once with the request limit raised to 100 MB (they are streamed
// to the model server and answered) and once with the default limit
// (refused with 413 before they are read), and checks that the daemon's
// memory stays bounded by what it may hold (its byte budget), not by what
// clients send: before, such a burst took it from 116 MB to 2.2 GB.
func TestLargeRequestsMemory(t *testing.T) {
	const n, size = 10, 60_000_000
	for _, tc := range []struct {
		name, extra string
		code        int
		budget      int64 // local.maxBufferedBytes after defaults
	}{
		{"limit 100M", "maxRequestBytes: 100M", http.StatusOK, 100_000_000},
		{"default limit", "", http.StatusRequestEntityTooLarge, 64 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := largeBurst(t, tc.extra, n, size)
			t.Logf("%d × %d MB, %s: %s", n, size/1_000_000, tc.name, f)
			// Every answer is the expected one. A request may go unanswered
			// on a machine too busy to move 600 MB within the daemon's
			// whole-request timeout (60 s): that is timing, logged above.
			if f.codes[tc.code] == 0 || f.codes[tc.code]+f.codes[0] != n {
				t.Errorf("answers %v; want %d × %d", f.codes, n, tc.code)
			}
			// A deterministic bound, not a timing: what the router may hold
			// of request bodies, with room for the garbage collector's lag.
			if limit := f.idleRSS + 4*tc.budget; f.peakRSS > limit {
				t.Errorf("peak RSS %.0f MB over idle + 4 × the byte budget (%.0f MB)", mb(f.peakRSS), mb(limit))
			}
		})
	}
}

// BenchmarkLargeRequestsMemory prints the daemon's idle and peak RSS
// around 10 concurrent 60 MB predictions (limit raised to 100 MB):
//
//	go test ./e2e -run '^$' -bench BenchmarkLargeRequestsMemory -benchtime 1x
func BenchmarkLargeRequestsMemory(b *testing.B) {
	for range b.N {
		f := largeBurst(b, "maxRequestBytes: 100M", 10, 60_000_000)
		fmt.Printf("\nmerlin memory, 10 concurrent 60 MB predictions streamed: %s\n", f)
		b.ReportMetric(mb(f.idleRSS), "idle-MB")
		b.ReportMetric(mb(f.peakRSS), "peak-MB")
		b.ReportMetric(float64(f.peakRSS)/float64(f.idleRSS), "peak/idle")
	}
}
