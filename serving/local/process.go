package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/local/modelserver"
)

// process supervises the model server of one version. Its run loop starts
// the server, waits for it to be ready, and restarts it with backoff when it
// dies; stop ends the loop. A process adopted from a previous daemon is
// watched by polling, since it is not our child.
type process struct {
	v   serving.Version
	l   *Local
	log *slog.Logger

	mu       sync.Mutex
	state    serving.State
	addr     string // host:port of the server
	up       atomic.Pointer[upstream]
	pid      int
	lastErr  string
	restarts int
	since    time.Time
	ready    chan struct{} // closed when the server is ready; replaced on restart
	wake     chan struct{} // a request for an idle version
	// reason refines a failed state: serving.ReasonCrashLoop or
	// serving.ReasonCannotRun once the version is given up on.
	reason serving.Reason
	// conds are the version's conditions, updated on every state change
	// so that their transition times are real.
	conds []serving.Condition
	// changed is closed and replaced whenever state or exits change.
	changed chan struct{}
	// exits counts the server's exits since it was last ready.
	exits int

	// scratch is the running server's HOME and TMPDIR (sandbox.go).
	scratch string

	// listener is the socket the server accepts on. The daemon keeps it
	// open across restarts and idle periods, so requests that arrive while
	// the server is down queue in the kernel's backlog instead of failing.
	listener *os.File

	inflight atomic.Int64
	lastUsed atomic.Int64 // unix nanoseconds of the last request
	retired  atomic.Bool  // no new requests may start
	done     chan struct{}
	cancel   context.CancelFunc
}

func newProcess(l *Local, v serving.Version) *process {
	now := time.Now()
	p := &process{
		v: v, l: l, log: l.log.With("model", v.Model, "version", v.ID),
		state: serving.StateStarting, since: now, changed: make(chan struct{}),
		conds: serving.VersionConditions(nil, serving.StateStarting, "", "", now),
		ready: make(chan struct{}), wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
	p.lastUsed.Store(now.UnixNano())
	return p
}

// status reports the version's state and conditions (without its weight,
// which is the router's).
func (p *process) status() serving.VersionStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return serving.VersionStatus{
		Version: p.v.ID, State: p.state, Endpoint: p.addr, Restarts: p.restarts, LastError: p.lastErr,
		Since: p.since, Conditions: slices.Clone(p.conds),
	}
}

// update takes settings that can change without a new version (replicas).
func (p *process) update(v serving.Version) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.v.Replicas, p.v.Resources, p.v.Labels, p.v.Annotations = v.Replicas, v.Resources, v.Labels, v.Annotations
}

func (p *process) replicas() (minReplicas int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.v.Replicas.Min
}

// setState records a new state and, when it changed, tells the target,
// which routes the version's model again (a ready version may now take
// traffic). reason refines a failure (serving.ReasonCrashLoop,
// serving.ReasonCannotRun; "" otherwise); errMsg says what went wrong.
func (p *process) setState(s serving.State, reason serving.Reason, errMsg string) {
	p.mu.Lock()
	changed := p.setStateLocked(s, reason, errMsg)
	p.mu.Unlock()
	// Outside p.mu: the target locks its own mutex before a process's.
	if changed {
		p.l.versionChanged()
	}
}

// setStateLocked is setState for a caller that holds p.mu; it reports
// whether the state or its reason changed.
func (p *process) setStateLocked(s serving.State, reason serving.Reason, errMsg string) bool {
	now := time.Now()
	changed := p.state != s || p.reason != reason
	if p.state != s {
		p.since = now
	}
	if s == serving.StateReady {
		p.exits = 0
		select {
		case <-p.ready:
		default:
			close(p.ready)
		}
	}
	p.state, p.reason = s, reason
	if errMsg != "" || s == serving.StateReady {
		p.lastErr = errMsg
	}
	msg := ""
	if s == serving.StateFailed {
		msg = p.lastErr
	}
	p.conds = serving.VersionConditions(p.conds, s, reason, msg, now)
	if changed {
		p.changedLocked()
	}
	return changed
}

// servable reports whether the version answers requests now or starts on
// the next one (scaled to zero): what serving.Route calls ready.
func (p *process) servable() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state == serving.StateReady || p.state == serving.StateIdle
}

// changedLocked wakes everyone waiting for the process to change. The
// caller holds p.mu.
func (p *process) changedLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// resetReady arms a new ready channel once the current one has fired;
// an unfired one is kept so that its waiters see the next start. The
// caller holds p.mu.
func (p *process) resetReady() {
	select {
	case <-p.ready:
		p.ready = make(chan struct{})
	default:
	}
}

// acquire registers a request; it fails once the version is retired, so
// that a version is stopped only after every request that picked it ended.
func (p *process) acquire() bool {
	p.inflight.Add(1)
	if p.retired.Load() {
		p.inflight.Add(-1)
		return false
	}
	p.lastUsed.Store(time.Now().UnixNano())
	return true
}

func (p *process) release() { p.inflight.Add(-1) }

// closeConns closes the daemon's copy of the server's listening socket
// (the server holds its own descriptor) and the router's idle connections
// to it.
func (p *process) closeConns() {
	if p.listener != nil {
		p.listener.Close()
	}
	p.upstream().closeIdle()
}

// crashLoop is how many exits without becoming ready make a version
// crash-loop: it is reported failed (serving.ReasonCrashLoop) and requests
// stop waiting for it, though it keeps restarting with backoff.
const crashLoop = 3

// awaitReady blocks a request until the server is ready, waking an idle
// one (a cold start). It gives up when the server cannot run (a missing
// runtime or package) or crash-loops. Apply never waits: only requests do.
func (p *process) awaitReady(ctx context.Context) error {
	for {
		p.mu.Lock()
		ch, changed, state, msg, reason := p.ready, p.changed, p.state, p.lastErr, p.reason
		p.mu.Unlock()
		if state == serving.StateFailed && (reason == serving.ReasonCrashLoop || reason == serving.ReasonCannotRun) {
			return fmt.Errorf("version %s cannot serve (%s): %s", p.v.ID, reason, msg)
		}
		if state == serving.StateIdle {
			select {
			case p.wake <- struct{}{}:
			default:
			}
		}
		select {
		case <-ch:
			return nil
		case <-changed:
		case <-p.done:
			return fmt.Errorf("version %s stopped", p.v.ID)
		case <-ctx.Done():
			if msg = p.status().LastError; msg != "" {
				return fmt.Errorf("version %s not ready: %s", p.v.ID, msg)
			}
			return fmt.Errorf("version %s not ready: %w", p.v.ID, ctx.Err())
		}
	}
}

// run supervises the server until stop. adopted is a live server left by
// a previous daemon, or nil.
func (p *process) run(ctx context.Context, adopted *record) {
	defer close(p.done)
	backoff := time.Second
	for ctx.Err() == nil {
		var exit error
		if adopted != nil {
			exit = p.watchAdopted(ctx, adopted)
			adopted = nil
		} else {
			exit = p.runOnce(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(exit, errIdle) {
			if !p.sleepIdle(ctx) {
				return
			}
			backoff = time.Second
			continue
		}
		p.mu.Lock()
		p.restarts++
		p.exits++
		exits := p.exits
		p.changedLocked()
		p.resetReady()
		p.mu.Unlock()
		if permanent(exit) {
			p.setState(serving.StateFailed, serving.ReasonCannotRun, exit.Error())
			p.log.Error("model server cannot run", "err", exit)
			<-ctx.Done()
			return
		}
		var reason serving.Reason // restarting
		if exits >= crashLoop {
			reason = serving.ReasonCrashLoop
		}
		p.setState(serving.StateFailed, reason, exit.Error())
		p.log.Warn("model server exited; restarting", "err", exit, "exits", exits, "backoff", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// errIdle ends a server that was stopped for being idle.
var errIdle = errors.New("idle")

// exitError is a server exit with the last line it wrote to stderr.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return fmt.Sprintf("model server exited with code %d", e.code)
}

// permanent reports exits that a restart cannot fix: no runtime for the
// flavor, a missing Python package.
func permanent(err error) bool {
	var ee *exitError
	return errors.As(err, &ee) && (ee.code == modelserver.ExitNoRuntime || ee.code == modelserver.ExitMissingPackage)
}

// runOnce starts the server and waits until it exits, is stopped, or goes
// idle.
func (p *process) runOnce(ctx context.Context) error {
	if err := p.ensureListener(); err != nil {
		return err
	}
	logf, err := os.OpenFile(p.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer logf.Close()
	start := logSize(logf)
	sb, err := p.l.newSandbox(p.v)
	if err != nil {
		return err
	}
	cmd := modelserver.Command(sb.pkg, modelserver.Options{
		Python: p.l.python, ModelDir: sb.modelDir, Bundle: p.v.Bundle, Name: p.v.Model, Version: p.v.ID,
		Workers: p.l.opts.Workers, OrphanTimeout: p.l.opts.OrphanTimeout,
	}, p.listener)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := sb.start(cmd); err != nil {
		return fmt.Errorf("start model server: %w", err)
	}
	if !p.l.children.add(cmd.Process.Pid) {
		return p.closedDuringStart(cmd)
	}
	defer p.l.children.remove(cmd.Process.Pid)
	p.mu.Lock()
	p.pid, p.scratch = cmd.Process.Pid, sb.scratch
	p.mu.Unlock()
	defer p.endScratch()
	p.l.saveRecord(p)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	p.log.Info("model server started", "pid", cmd.Process.Pid, "addr", p.addr)

	probeCtx, cancelProbe := context.WithCancel(ctx)
	defer cancelProbe()
	go p.probeReady(probeCtx)
	select {
	case err := <-exited:
		return sb.unmask(p.exitErr(err, start))
	case <-ctx.Done():
		if !p.l.detached.Load() {
			p.terminate(cmd.Process.Pid, exited)
		}
		return ctx.Err()
	case <-p.idleCh(ctx):
		p.log.Info("stopping idle model server", "idle", p.l.opts.IdleTimeout)
		p.terminate(cmd.Process.Pid, exited)
		return errIdle
	}
}

// probeReady polls the server's readiness endpoint and marks it ready.
func (p *process) probeReady(ctx context.Context) {
	url := "http://" + p.addr + "/v2/health/ready"
	for ctx.Err() == nil {
		if healthy(ctx, p.l.probe, url) {
			p.setState(serving.StateReady, "", "")
			p.log.Info("model server ready")
			return
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

func healthy(ctx context.Context, c *http.Client, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// idleCh fires when a scale-to-zero version has had no request for the
// idle timeout.
func (p *process) idleCh(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{})
	if p.l.opts.IdleTimeout <= 0 {
		return ch
	}
	go func() {
		tick := time.NewTicker(min(p.l.opts.IdleTimeout/4, time.Second))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				idle := time.Since(time.Unix(0, p.lastUsed.Load()))
				if p.replicas() == 0 && idle >= p.l.opts.IdleTimeout && p.inflight.Load() == 0 && p.isReady() {
					close(ch)
					return
				}
			}
		}
	}()
	return ch
}

func (p *process) isReady() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state == serving.StateReady
}

// sleepIdle waits, scaled to zero, for the next request.
func (p *process) sleepIdle(ctx context.Context) bool {
	p.mu.Lock()
	p.resetReady()
	p.pid = 0
	p.mu.Unlock()
	p.setState(serving.StateIdle, "", "")
	p.l.saveRecord(p)
	select {
	case <-p.wake:
		p.setState(serving.StateStarting, "", "")
		p.log.Info("waking idle model server for a request")
		return true
	case <-ctx.Done():
		return false
	}
}

// terminate stops the server's process group: SIGTERM, then SIGKILL after
// the grace period.
func (p *process) terminate(pid int, exited <-chan error) {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	var err error
	select {
	case err = <-exited:
	case <-time.After(p.l.opts.StopTimeout):
		p.log.Warn("model server did not stop in time; killing it", "pid", pid)
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		err = <-exited
	}
	p.log.Debug("model server exited", "pid", pid, "exit", err)
}

// exitErr explains a server's exit: a signal that killed it, or the last
// line it wrote to its log since it started (logStart). A killed server
// did not write why it died, so its log is not read: its last line may be
// a request's traceback logged long before, unrelated to the exit.
func (p *process) exitErr(err error, logStart int64) error {
	code := -1
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			msg := fmt.Sprintf("model server killed by signal %d (%s)", int(ws.Signal()), ws.Signal())
			if ws.Signal() == syscall.SIGKILL {
				msg += "; out of memory?"
			}
			return &exitError{code: -1, msg: msg}
		}
		code = ee.ExitCode()
	}
	return &exitError{code: code, msg: lastLine(p.logPath(), logStart)}
}

// watchAdopted watches a server started by a previous daemon until it
// dies or the version is stopped.
func (p *process) watchAdopted(ctx context.Context, r *record) error {
	p.mu.Lock()
	p.pid, p.addr, p.scratch = r.PID, r.Addr, r.Scratch
	p.mu.Unlock()
	defer p.endScratch()
	p.setState(serving.StateReady, "", "")
	p.log.Info("adopted running model server", "pid", r.PID, "addr", r.Addr)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	idle := p.idleCh(ctx)
	for {
		select {
		case <-ctx.Done():
			if !p.l.detached.Load() {
				p.terminateAdopted(r.PID)
			}
			return ctx.Err()
		case <-idle:
			p.terminateAdopted(r.PID)
			return errIdle
		case <-tick.C:
			if !alive(r.PID) {
				return &exitError{code: -1, msg: "adopted model server exited"}
			}
		}
	}
}

func (p *process) terminateAdopted(pid int) {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	deadline := time.Now().Add(p.l.opts.StopTimeout)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if alive(pid) {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// alive reports whether pid runs (and is not a zombie).
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name in parentheses: "pid (comm) S ...".
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

// ensureListener opens the socket the server will accept on, once per
// version: restarts reuse it.
func (p *process) ensureListener() error {
	if p.listener != nil {
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close() // f holds its own descriptor of the socket
	if err != nil {
		return fmt.Errorf("listener file: %w", err)
	}
	p.listener = f
	p.mu.Lock()
	p.addr = ln.Addr().String()
	p.mu.Unlock()
	return nil
}

func (p *process) logPath() string { return filepath.Join(p.l.opts.StateDir, "logs", p.v.ID+".log") }

func logSize(f *os.File) int64 {
	st, err := f.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}

// lastLine returns the last non-empty line written to a log after offset:
// the model server's reason for exiting.
func lastLine(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const tail = 4096
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	if st.Size() <= offset { // nothing new, or the log was replaced
		return ""
	}
	from := max(offset, st.Size()-tail)
	buf := make([]byte, st.Size()-from)
	if _, err := f.ReadAt(buf, from); err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(buf)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// upstream returns the connection pool to the version's server.
func (p *process) upstream() *upstream {
	if u := p.up.Load(); u != nil && u.addr == p.addr {
		return u
	}
	u := &upstream{addr: p.addr}
	p.up.Store(u)
	return u
}
