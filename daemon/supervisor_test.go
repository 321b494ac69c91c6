package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"merlin.dev/merlin/internal/testlog"
)

// buildMerlin builds the merlin binary into a temporary directory.
func buildMerlin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "merlin")
	out, err := exec.Command("go", "build", "-o", bin, "merlin.dev/merlin/cmd/merlin").CombinedOutput()
	if err != nil {
		t.Fatalf("build merlin: %v\n%s", err, out)
	}
	return bin
}

// supervisor does for merlin what systemd does with merlin.service
// (Restart=always, RestartSec=100ms) and, when it holds sockets,
// merlin.socket: it opens the listening sockets once and passes them to
// every daemon it starts. It sets LISTEN_PID as systemd does after fork,
// through `sh -c 'LISTEN_PID=$$ exec ...'` (Go cannot run code between
// fork and exec), like systemd-socket-activate.
type supervisor struct {
	t     *testing.T
	bin   string
	args  []string   // merlin's arguments
	socks []*os.File // passed as descriptors 3, 4...; none: the daemon binds
	names []string
	log   *testlog.Buffer

	mu       sync.Mutex
	cmd      *exec.Cmd
	starts   []time.Time // when each daemon was started
	stopping bool
	done     chan struct{}
}

// restartDelay is how long the supervisor waits before a restart (systemd's
// default RestartSec, and merlin.service's).
const restartDelay = 100 * time.Millisecond

func (s *supervisor) run() {
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		for {
			cmd := s.spawn()
			if cmd == nil {
				return
			}
			_ = cmd.Wait()
			s.mu.Lock()
			stopping := s.stopping
			s.mu.Unlock()
			if stopping {
				return
			}
			time.Sleep(restartDelay) // the supervisor's restart delay, not a wait in the test
		}
	}()
}

func (s *supervisor) spawn() *exec.Cmd {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return nil
	}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Env = os.Environ()
	if len(s.socks) > 0 {
		cmd = exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, s.bin}, s.args...)...)
		cmd.Env = append(os.Environ(), "LISTEN_FDS="+strconv.Itoa(len(s.socks)), "LISTEN_FDNAMES="+strings.Join(s.names, ":"))
		cmd.ExtraFiles = s.socks
	}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		s.t.Errorf("supervisor: start merlin: %v", err)
		return nil
	}
	fmt.Fprintf(s.log, "supervisor: started merlin, pid %d\n", cmd.Process.Pid)
	s.cmd = cmd
	s.starts = append(s.starts, time.Now())
	return cmd
}

// pid is the running daemon's.
func (s *supervisor) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd.Process.Pid
}

// started is how many daemons the supervisor started, and when the last.
func (s *supervisor) started() (int, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.starts), s.starts[len(s.starts)-1]
}

// stop ends the daemon with SIGTERM (it stops its model servers) and
// does not restart it.
func (s *supervisor) stop() {
	s.mu.Lock()
	s.stopping = true
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil || s.done == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(time.Minute):
		s.t.Errorf("merlin did not stop within a minute of SIGTERM")
		_ = cmd.Process.Kill()
		<-s.done
	}
}

// shot is one prediction request of the load.
type shot struct {
	start, end time.Time
	err        error
	code       int
	version    string
}

func (s shot) ok() bool { return s.err == nil && s.code == http.StatusOK }

// load sends requests (POSTs of body, or GETs) at a steady rate, each on its own goroutine, from
// a client that keeps connections alive as a real one would.
type load struct {
	mu    sync.Mutex
	shots []shot
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startLoad(url, body string, rps int) *load {
	l := &load{stop: make(chan struct{})}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(rps))
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				s := shot{start: time.Now()}
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				if body != "" {
					req, _ = http.NewRequest(http.MethodPost, url, strings.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
				}
				resp, err := client.Do(req)
				if err == nil {
					s.code, s.version = resp.StatusCode, resp.Header.Get("X-Merlin-Version")
					resp.Body.Close()
				}
				s.err, s.end = err, time.Now()
				l.mu.Lock()
				l.shots = append(l.shots, s)
				l.mu.Unlock()
			}()
		}
	}()
	return l
}

// answered counts the successful answers to requests sent after since.
func (l *load) answered(since time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.shots {
		if s.ok() && s.start.After(since) {
			n++
		}
	}
	return n
}

// finish stops the load and returns every request, in the order sent.
func (l *load) finish() []shot {
	close(l.stop)
	l.wg.Wait()
	slices.SortFunc(l.shots, func(a, b shot) int { return a.start.Compare(b.start) })
	return l.shots
}

// outage is what clients saw of a restart.
type outage struct {
	requests, failed, refused int
	// longestGap is the longest time without a successful answer.
	longestGap time.Duration
	// firstServed is from the kill, and from the new daemon's start, to
	// the first answer to a request sent after the kill.
	firstServed, firstServedStart time.Duration
	// slowest is the longest a successful request waited.
	slowest time.Duration
	errs    []string
}

func measure(shots []shot, killed, restarted time.Time) outage {
	var o outage
	var last time.Time
	for _, s := range shots {
		o.requests++
		if !s.ok() {
			o.failed++
			if errors.Is(s.err, syscall.ECONNREFUSED) {
				o.refused++
			}
			if len(o.errs) < 3 {
				o.errs = append(o.errs, fmt.Sprintf("%d %v", s.code, s.err))
			}
		}
	}
	ends := []time.Time{}
	for _, s := range shots {
		if s.ok() {
			ends = append(ends, s.end)
			o.slowest = max(o.slowest, s.end.Sub(s.start))
		}
	}
	first := firstAnswer(shots, killed)
	slices.SortFunc(ends, func(a, b time.Time) int { return a.Compare(b) })
	for _, e := range ends {
		if !last.IsZero() {
			o.longestGap = max(o.longestGap, e.Sub(last))
		}
		last = e
	}
	o.firstServed, o.firstServedStart = first.Sub(killed), first.Sub(restarted)
	return o
}

func (o outage) String() string {
	return fmt.Sprintf("%d requests, %d failed (%d refused), longest gap %d ms, first served %d ms after the kill (%d ms after the restart), slowest answer %d ms",
		o.requests, o.failed, o.refused, o.longestGap.Milliseconds(), o.firstServed.Milliseconds(), o.firstServedStart.Milliseconds(), o.slowest.Milliseconds())
}

// socketInode is the inode of a socket, as /proc/PID/fd names it.
func socketInode(t *testing.T, f *os.File) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("socket:[%d]", st.Ino)
}

// requireNotInherited checks that a model server holds none of the
// daemon's listening sockets and did not get socket activation's
// variables.
func requireNotInherited(t *testing.T, pid int, socks []*os.File) {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range socks {
		inode := socketInode(t, f)
		for _, fd := range fds {
			if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); target == inode {
				t.Errorf("model server %d holds the daemon's socket %s as descriptor %s", pid, f.Name(), fd.Name())
			}
		}
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(environ), "\x00") {
		if strings.HasPrefix(kv, "LISTEN_") {
			t.Errorf("model server %d inherited %s", pid, kv)
		}
	}
}

// listenFile opens a listening socket, as a supervisor does, and the
// address it is bound to.
func listenFile(t *testing.T) (*os.File, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // f holds the socket
	t.Cleanup(func() { f.Close() })
	return f, addr
}

// phases reads when the last daemon started in log (its slog lines) logged
// its first line, adopted the model server and fetched from git first,
// relative to its start.
func phases(log string, started time.Time) string {
	i := strings.LastIndex(log, "supervisor: started merlin")
	if i < 0 {
		return "not started"
	}
	_, last, _ := strings.Cut(log[i:], "\n")
	var out []string
	seen := map[string]bool{}
	for _, line := range strings.Split(last, "\n") {
		ts, _, ok := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if !ok || err != nil {
			continue
		}
		for _, p := range []struct{ what, msg string }{{"first log line", ""}, {"adopted", "adopted running model server"}, {"first git fetch", "new revision"}} {
			if !seen[p.what] && strings.Contains(line, p.msg) {
				seen[p.what] = true
				out = append(out, fmt.Sprintf("%s %d ms", p.what, at.Sub(started).Milliseconds()))
			}
		}
	}
	return strings.Join(out, ", ")
}
