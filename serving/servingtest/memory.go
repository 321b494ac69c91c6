package servingtest

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"merlin.dev/merlin/serving"
)

// Memory is a serving.Target that keeps everything in memory, for tests of
// what drives a target (the reconciler). It passes the contract suite: a
// version is ready as soon as it is applied, unless Hold keeps it starting
// or Break makes it crash-loop. It routes with serving.Route like the real
// targets, so traffic never moves to a version that is not ready.
type Memory struct {
	mu       sync.Mutex
	now      func() time.Time
	desired  map[string]serving.Deployment // by model
	routed   map[string]map[string]int     // by model: the split routed now
	conds    map[string][]serving.Condition
	versions map[string]*memVersion // by version ID
	held     map[string]bool
	broken   map[string]string // version → message
	applies  map[string]int    // by model
	changes  chan struct{}
}

type memVersion struct {
	v     serving.Version
	state serving.State
	since time.Time
	conds []serving.Condition
}

var (
	_ serving.Target   = (*Memory)(nil)
	_ serving.Notifier = (*Memory)(nil)
	_ serving.Comparer = (*Memory)(nil)
)

// NewMemory returns an empty in-memory target.
func NewMemory() *Memory {
	return &Memory{
		now: time.Now, desired: map[string]serving.Deployment{}, routed: map[string]map[string]int{},
		conds: map[string][]serving.Condition{}, versions: map[string]*memVersion{}, held: map[string]bool{},
		broken: map[string]string{}, applies: map[string]int{}, changes: make(chan struct{}, 1),
	}
}

// ComparesPredictions implements serving.Comparer.
func (m *Memory) ComparesPredictions() {}

// Changes implements serving.Notifier.
func (m *Memory) Changes() <-chan struct{} { return m.changes }

// Hold keeps version id starting (not ready) until Release.
func (m *Memory) Hold(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.held[id] = true
	if v := m.versions[id]; v != nil && v.state == serving.StateReady {
		m.setLocked(v, serving.StateStarting, "", "")
	}
	m.convergeLocked()
}

// Release makes a held version ready.
func (m *Memory) Release(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.held, id)
	if v := m.versions[id]; v != nil && v.state == serving.StateStarting {
		m.setLocked(v, serving.StateReady, "", "")
	}
	m.convergeLocked()
}

// Break makes version id crash-loop with msg, now or when it starts.
func (m *Memory) Break(id, msg string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.broken[id] = msg
	if v := m.versions[id]; v != nil {
		m.setLocked(v, serving.StateFailed, serving.ReasonCrashLoop, msg)
	}
	m.convergeLocked()
}

// Applies returns how many times model was applied.
func (m *Memory) Applies(model string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applies[model]
}

// Desired returns the deployment last applied for model.
func (m *Memory) Desired(model string) (serving.Deployment, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.desired[model]
	return d, ok
}

// Apply implements serving.Target.
func (m *Memory) Apply(_ context.Context, d serving.Deployment) error {
	if err := d.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.applies[d.Model]++
	m.desired[d.Model] = d.Clone()
	for _, v := range d.Versions {
		if mv := m.versions[v.ID]; mv != nil {
			mv.v = v
			continue
		}
		mv := &memVersion{v: v}
		m.versions[v.ID] = mv
		switch msg, broken := m.broken[v.ID]; {
		case broken:
			m.setLocked(mv, serving.StateFailed, serving.ReasonCrashLoop, msg)
		case m.held[v.ID]:
			m.setLocked(mv, serving.StateStarting, "", "")
		default:
			m.setLocked(mv, serving.StateReady, "", "")
		}
	}
	m.convergeLocked()
	return nil
}

func (m *Memory) setLocked(v *memVersion, s serving.State, reason serving.Reason, msg string) {
	now := m.now()
	if v.state != s {
		v.since = now
	}
	v.state = s
	v.conds = serving.VersionConditions(v.conds, s, reason, msg, now)
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

// convergeLocked routes every model as far as readiness allows and stops
// the versions no model keeps.
func (m *Memory) convergeLocked() {
	keep := map[string]bool{}
	for model, d := range m.desired {
		r := m.routeLocked(d)
		m.routed[model] = r.Traffic
		for _, id := range r.Keep {
			keep[id] = true
		}
	}
	for id := range m.versions {
		if !keep[id] {
			delete(m.versions, id)
		}
	}
}

func (m *Memory) routeLocked(d serving.Deployment) serving.Routing {
	return serving.Route(d, m.routed[d.Model], func(id string) bool {
		v := m.versions[id]
		return v != nil && (v.state == serving.StateReady || v.state == serving.StateIdle)
	})
}

// Delete implements serving.Target.
func (m *Memory) Delete(_ context.Context, model string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.desired, model)
	delete(m.routed, model)
	delete(m.conds, model)
	m.convergeLocked()
	return nil
}

// Status implements serving.Target.
func (m *Memory) Status(context.Context) ([]serving.ModelStatus, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]serving.ModelStatus, 0, len(m.desired))
	for _, model := range slices.Sorted(maps.Keys(m.desired)) {
		d := m.desired[model]
		r := m.routeLocked(d)
		ms := serving.ModelStatus{Name: model, Mirrors: slices.Clone(d.Mirrors)}
		for _, id := range r.Keep {
			v := m.versions[id]
			if v == nil {
				continue
			}
			vs := serving.VersionStatus{
				Version: id, Weight: m.routed[model][id], State: v.state, Endpoint: "memory:" + id,
				Since: v.since, Conditions: slices.Clone(v.conds),
			}
			if c, _ := serving.Find(v.conds, serving.Degraded); c.Status == serving.True {
				vs.LastError = c.Message
			}
			ms.Versions = append(ms.Versions, vs)
		}
		if len(ms.Mirrors) > 0 {
			ms.Mirror = &ms.Mirrors[0]
		}
		m.conds[model] = serving.ModelConditions(m.conds[model], r, ms.Versions, m.now())
		ms.Conditions = slices.Clone(m.conds[model])
		out = append(out, ms)
	}
	return out, nil
}
