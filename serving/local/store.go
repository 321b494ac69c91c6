package local

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"merlin.dev/merlin/internal/atomicfile"
	"merlin.dev/merlin/serving"
)

// The local target keeps two kinds of state in StateDir:
//
//	deployments.json   per model: the last applied deployment, the split
//	                   routed now and the versions that split still needs
//	                   beyond the deployment's
//	run/<version>.json one record per running model server (pid, address)
//
// A restarted daemon restores every model as it was: the same desired
// deployment and the same routed split, which moves on only when the
// versions gaining traffic are ready again (serving.Route). A server whose
// record still matches a live process that answers its readiness probe is
// adopted (not restarted); the others are started again from their
// bundles. Records of servers no model keeps are stopped.

// modelState is what deployments.json keeps of one model.
type modelState struct {
	Desired serving.Deployment `json:"desired"`
	// Routed is the split routed when the state was saved.
	Routed map[string]int `json:"routed"`
	// Retained are versions Routed sends traffic to that Desired no longer
	// lists (an old version serving until the new one is ready).
	Retained []serving.Version `json:"retained,omitempty"`
}

// legacyDeployment is a model in deployments.json before it kept the
// routed split: the deployment alone, with at most one mirror.
type legacyDeployment struct {
	serving.Deployment
	Mirror *serving.Mirror
}

// record describes a running model server.
type record struct {
	Version string    `json:"version"`
	Model   string    `json:"model"`
	PID     int       `json:"pid"`
	Addr    string    `json:"addr"`
	Started time.Time `json:"started"`
	// Scratch is the server's scratch directory, removed when it ends.
	Scratch string `json:"scratch,omitempty"`
}

func (l *Local) recordPath(version string) string {
	return filepath.Join(l.opts.StateDir, "run", version+".json")
}

func (l *Local) saveRecord(p *process) {
	p.mu.Lock()
	r := record{Version: p.v.ID, Model: p.v.Model, PID: p.pid, Addr: p.addr, Started: time.Now(), Scratch: p.scratch}
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
	models := make(map[string]modelState, len(l.deployments))
	for model, d := range l.deployments {
		r := l.routing[model]
		st := modelState{Desired: d, Routed: r.Traffic}
		for _, id := range r.Keep {
			listed := slices.ContainsFunc(d.Versions, func(v serving.Version) bool { return v.ID == id })
			if p := l.procs[id]; p != nil && !listed {
				st.Retained = append(st.Retained, p.v)
			}
		}
		models[model] = st
	}
	// The copy first: whichever write a crash interrupts, one of the two
	// files holds a complete state.
	for _, path := range []string{l.deploymentsPath() + lastGoodSuffix, l.deploymentsPath()} {
		if err := writeJSON(path, models); err != nil {
			return fmt.Errorf("local target: save deployments: %w", err)
		}
	}
	return nil
}

// lastGoodSuffix names the copy of deployments.json kept beside it.
const lastGoodSuffix = ".last-good"

// readModels reads deployments.json: nil when it does not exist. An empty
// or corrupt file is not "no deployments", which would stop every server
// the previous run left: its last good copy is used, with a warning, and
// without one the error names the file.
func (l *Local) readModels() (map[string]modelState, error) {
	path := l.deploymentsPath()
	models, err := readModelsFile(path)
	if err == nil {
		return models, nil
	}
	good, cerr := readModelsFile(path + lastGoodSuffix)
	if cerr == nil && good == nil {
		cerr = fmt.Errorf("%s does not exist", path+lastGoodSuffix)
	}
	if cerr != nil {
		return nil, fmt.Errorf("local target: %w; no usable copy (%w)", err, cerr)
	}
	l.log.Warn("deployments file is corrupt; using its last good copy", "file", path, "copy", path+lastGoodSuffix, "err", err)
	return good, nil
}

func readModelsFile(path string) (map[string]modelState, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%s is empty (%d bytes)", path, len(data))
	}
	models, err := decodeModels(data)
	if err != nil {
		return nil, fmt.Errorf("corrupt %s (%d bytes, truncated?): %w", path, len(data), err)
	}
	if models == nil { // "null"
		models = map[string]modelState{}
	}
	return models, nil
}

// decodeModels reads deployments.json, in its current form or the one
// before it (a bare deployment per model, routed as desired).
func decodeModels(data []byte) (map[string]modelState, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	out := make(map[string]modelState, len(raw))
	for model, msg := range raw {
		var st struct {
			modelState
			Desired *serving.Deployment `json:"desired"`
		}
		if err := json.Unmarshal(msg, &st); err != nil {
			return nil, fmt.Errorf("model %s: %w", model, err)
		}
		if st.Desired != nil {
			st.modelState.Desired = *st.Desired
			out[model] = st.modelState
			continue
		}
		var old legacyDeployment
		if err := json.Unmarshal(msg, &old); err != nil {
			return nil, fmt.Errorf("model %s: %w", model, err)
		}
		d := old.Deployment
		if old.Mirror != nil {
			d.Mirrors = []serving.Mirror{*old.Mirror}
		}
		out[model] = modelState{Desired: d, Routed: d.Traffic}
	}
	return out, nil
}

// restore brings back the models of a previous run: their desired
// deployments, their routed splits and the versions both need.
func (l *Local) restore() error {
	models, err := l.readModels()
	if err != nil {
		return err
	}
	records := l.readRecords()
	l.mu.Lock()
	defer l.mu.Unlock()
	for model, st := range models {
		l.deployments[model] = st.Desired
		if len(st.Routed) > 0 {
			l.routing[model] = serving.Routing{Traffic: st.Routed}
		}
		for _, v := range append(slices.Clone(st.Desired.Versions), st.Retained...) {
			var adopt *record
			if r, ok := records[v.ID]; ok && l.adoptable(r) {
				adopt = r
			} else if ok && !alive(r.PID) {
				removeScratch(r.Scratch)
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
		removeScratch(r.Scratch)
		l.removeRecord(r.Version)
	}
	for model := range l.deployments {
		l.convergeLocked(model)
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

// StoppedLogs is how many log files of stopped versions the state
// directory keeps (the most recent), so that a rolled-back version's log
// can still be read while hundreds of commits do not fill the disk.
const StoppedLogs = 20

// pruneLogs deletes the logs of stopped versions beyond the StoppedLogs
// most recently written; running versions keep theirs.
func (l *Local) pruneLogs(running map[string]bool) {
	dir := filepath.Join(l.opts.StateDir, "logs")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type logFile struct {
		name string
		mod  time.Time
	}
	var stopped []logFile
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok || running[id] || !e.Type().IsRegular() {
			continue
		}
		if info, err := e.Info(); err == nil {
			stopped = append(stopped, logFile{e.Name(), info.ModTime()})
		}
	}
	if len(stopped) <= StoppedLogs {
		return
	}
	slices.SortFunc(stopped, func(a, b logFile) int { return b.mod.Compare(a.mod) })
	for _, f := range stopped[StoppedLogs:] {
		if err := os.Remove(filepath.Join(dir, f.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			l.log.Warn("cannot remove model server log", "file", f.name, "err", err)
		}
	}
}
