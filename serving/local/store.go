package local

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"merlin.dev/merlin/internal/atomicfile"
)

// The local target keeps two kinds of state in StateDir:
//
//	deployments.json   the last applied deployment of every model
//	run/<version>.json one record per running model server (pid, address)
//
// A restarted daemon restores every deployment: a server whose record
// still matches a live process that answers its readiness probe is
// adopted (not restarted); the others are started again from their
// bundles. Records of servers no deployment wants are stopped.

// record describes a running model server.
type record struct {
	Version string    `json:"version"`
	Model   string    `json:"model"`
	PID     int       `json:"pid"`
	Addr    string    `json:"addr"`
	Started time.Time `json:"started"`
}

func (l *Local) recordPath(version string) string {
	return filepath.Join(l.opts.StateDir, "run", version+".json")
}

func (l *Local) saveRecord(p *process) {
	p.mu.Lock()
	r := record{Version: p.v.ID, Model: p.v.Model, PID: p.pid, Addr: p.addr, Started: time.Now()}
	p.mu.Unlock()
	if err := writeJSON(l.recordPath(r.Version), r); err != nil {
		l.log.Warn("cannot record model server", "version", r.Version, "err", err)
	}
}

func (l *Local) removeRecord(version string) {
	if err := os.Remove(l.recordPath(version)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		l.log.Warn("cannot remove model server record", "version", version, "err", err)
	}
}

func (l *Local) deploymentsPath() string { return filepath.Join(l.opts.StateDir, "deployments.json") }

func (l *Local) persistLocked() error {
	if err := writeJSON(l.deploymentsPath(), l.deployments); err != nil {
		return fmt.Errorf("local target: save deployments: %w", err)
	}
	return nil
}

// restore brings back the deployments of a previous run.
func (l *Local) restore() error {
	data, err := os.ReadFile(l.deploymentsPath())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local target: %w", err)
	}
	if len(data) > 0 {
		if err := json.Unmarshal(data, &l.deployments); err != nil {
			return fmt.Errorf("local target: corrupt %s: %w", l.deploymentsPath(), err)
		}
	}
	records := l.readRecords()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range l.deployments {
		for _, v := range d.Versions {
			var adopt *record
			if r, ok := records[v.ID]; ok && l.adoptable(r) {
				adopt = r
			}
			delete(records, v.ID)
			l.startLocked(v, adopt)
		}
	}
	for _, r := range records { // servers nobody wants any more
		if r.PID > 0 && matches(r) {
			l.log.Info("stopping model server left by a previous run", "version", r.Version, "pid", r.PID)
			_ = syscall.Kill(-r.PID, syscall.SIGTERM)
		}
		l.removeRecord(r.Version)
	}
	l.publishLocked()
	if n := len(l.deployments); n > 0 {
		l.log.Info("restored deployments", "models", n)
	}
	return nil
}

func (l *Local) readRecords() map[string]*record {
	out := map[string]*record{}
	entries, _ := os.ReadDir(filepath.Join(l.opts.StateDir, "run"))
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(l.opts.StateDir, "run", e.Name()))
		var r record
		if err != nil || json.Unmarshal(data, &r) != nil || r.Version == "" {
			continue
		}
		out[r.Version] = &r
	}
	return out
}

// adoptable reports whether a recorded server is alive, is the server of
// that version, and answers its readiness probe.
func (l *Local) adoptable(r *record) bool {
	if r.PID <= 0 || !alive(r.PID) || !matches(r) {
		return false
	}
	return healthy(l.ctx, l.probe, "http://"+r.Addr+"/v2/health/ready")
}

// matches checks that pid still runs the model server of the version (the
// pid may have been reused by another program).
func matches(r *record) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", r.PID))
	return err == nil && bytes.Contains(cmdline, []byte("\x00--version\x00"+r.Version+"\x00"))
}

// writeJSON writes v atomically.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(data, '\n'), 0o644)
}
