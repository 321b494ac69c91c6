package local

import (
	"errors"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// children are the process groups of the model servers this target
// started and has not reaped yet. A server is registered the moment it is
// forked, before it is recorded or ready, so that Close can find every
// one of them: the supervising goroutines stop their own servers, and
// Close kills what is still registered when they do not manage in time.
// Once closed, registering fails: a start that raced with Close is
// killed by its starter.
type children struct {
	mu     sync.Mutex
	closed bool
	pids   map[int]struct{}
}

// add registers a started server; false once the target is closing, in
// which case the caller must kill the server it just started.
func (c *children) add(pid int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	if c.pids == nil {
		c.pids = map[int]struct{}{}
	}
	c.pids[pid] = struct{}{}
	return true
}

// remove forgets a server that was reaped.
func (c *children) remove(pid int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pids, pid)
}

// close refuses further registrations.
func (c *children) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
}

// kill sends SIGKILL to the process group of every server not reaped yet
// and returns their pids.
func (c *children) kill() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var killed []int
	for pid := range c.pids {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		killed = append(killed, pid)
	}
	return killed
}

// closeSlack is how long Close waits, beyond the stop timeout, for the
// supervising goroutines before it kills the servers they have not reaped.
const closeSlack = 5 * time.Second

// stopAll ends every supervising goroutine, which stops its server
// (SIGTERM, SIGKILL after the stop timeout). A server forked while Close
// began is killed by its starter (children.add fails). Should a goroutine
// not reap its server within the stop timeout and closeSlack, every
// server still registered is killed here, so that shutdown never leaves a
// server it started behind.
func (l *Local) stopAll() {
	l.cancel()
	l.children.close()
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(l.opts.StopTimeout + closeSlack):
	}
	if pids := l.children.kill(); len(pids) > 0 {
		l.log.Warn("model servers not stopped in time; killed", "pids", pids)
	}
	<-done
}

// closedDuringStart stops a server forked after Close began, which Close
// may not wait for: nothing needs it, so it is killed at once.
func (p *process) closedDuringStart(cmd *exec.Cmd) error {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
	p.log.Info("model server started while the target closed; killed", "pid", cmd.Process.Pid)
	return errors.New("local target closed")
}
