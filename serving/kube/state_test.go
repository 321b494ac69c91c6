package kube

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"merlin.dev/merlin/reconciler"
)

var _ reconciler.StateStore = (*StateStore)(nil)

// TestStateStore saves state, reads it back through a new store (a
// restarted daemon), and checks that an unchanged blob is not rewritten.
func TestStateStore(t *testing.T) {
	e := newKubeEnv(t)
	s, err := NewStateStore(e.env.Client, e.ns, "models")
	if err != nil {
		t.Fatal(err)
	}
	if data, err := s.Load(t.Context()); err != nil || data != nil {
		t.Fatalf("first load: %q, %v; want nothing", data, err)
	}
	blob := []byte(`{"sha":"0123abc","models":{"iris":{"name":"iris"}}}`)
	if err := s.Save(t.Context(), blob); err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	key := client.ObjectKey{Namespace: e.ns, Name: "merlin-state-models"}
	if err := e.env.Client.Get(t.Context(), key, &cm); err != nil {
		t.Fatal(err)
	}
	rv := cm.ResourceVersion
	if err := s.Save(t.Context(), blob); err != nil {
		t.Fatal(err)
	}
	if err := e.env.Client.Get(t.Context(), key, &cm); err != nil || cm.ResourceVersion != rv {
		t.Errorf("unchanged state rewritten: resourceVersion %s → %s (%v)", rv, cm.ResourceVersion, err)
	}

	restarted, _ := NewStateStore(e.env.Client, e.ns, "models")
	got, err := restarted.Load(t.Context())
	if err != nil || string(got) != string(blob) {
		t.Fatalf("load after restart: %q, %v", got, err)
	}
	next := []byte(`{"sha":"4567def","models":{}}`)
	if err := restarted.Save(t.Context(), next); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Load(t.Context()); string(got) != string(next) {
		t.Errorf("load = %q, want %q", got, next)
	}
	// The caller's context bounds both: a cancelled one fails them.
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Load(cancelled); err == nil {
		t.Error("Load with a cancelled context succeeded")
	}
	if err := s.Save(cancelled, []byte(`{"sha":"89abcde"}`)); err == nil {
		t.Error("Save with a cancelled context succeeded")
	}
	if got, _ := restarted.Load(t.Context()); string(got) != string(next) {
		t.Errorf("after a cancelled Save: %q, want %q", got, next)
	}
	if _, err := NewStateStore(e.env.Client, e.ns, "Bad_Repo"); err == nil {
		t.Error("accepted a repository name that cannot name a ConfigMap")
	}
}
