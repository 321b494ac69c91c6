package kube

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// StateStore keeps a reconciler's state (an opaque blob, JSON in practice)
// in the ConfigMap merlin-state-<repo>, so a daemon restarted on another
// node resumes the rollouts where its predecessor left them. It satisfies
// reconciler.StateStore.
type StateStore struct {
	c         client.Client
	namespace string
	name      string

	mu   sync.Mutex
	last []byte // the blob in the ConfigMap as last loaded or saved
	// Timeout bounds each Load and Save within the caller's context.
	// Default 10s.
	Timeout time.Duration
}

const stateKey = "state.json"

// NewStateStore returns the store of repository repo in namespace.
func NewStateStore(c client.Client, namespace, repo string) (*StateStore, error) {
	name := "merlin-state-" + repo
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return nil, fmt.Errorf("state ConfigMap %q for repository %q: %v", name, repo, errs)
	}
	return &StateStore{c: c, namespace: namespace, name: name, Timeout: 10 * time.Second}, nil
}

// Load returns the saved blob, or nil when nothing was saved yet.
func (s *StateStore) Load(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	var cm corev1.ConfigMap
	err := s.c.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: s.name}, &cm)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load state from ConfigMap %s/%s: %w", s.namespace, s.name, explain(err))
	}
	data := []byte(cm.Data[stateKey])
	s.mu.Lock()
	s.last = data
	s.mu.Unlock()
	if len(data) == 0 {
		return nil, nil
	}
	return data, nil
}

// Save replaces the saved blob. The ConfigMap is created, then updated
// with the resourceVersion read just before: should two daemons ever write
// at once (a leader change), one gets a conflict instead of silently
// overwriting the other's state.
//
// The reconciler saves after every loop iteration; a blob equal to the one
// last loaded or saved is not written again, so an idle daemon does not
// write to the API server every second.
func (s *StateStore) Save(ctx context.Context, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last != nil && bytes.Equal(s.last, data) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	var cm corev1.ConfigMap
	err := s.c.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: s.name}, &cm)
	if apierrors.IsNotFound(err) {
		cm = corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{
				Name: s.name, Namespace: s.namespace,
				Labels: map[string]string{LabelManagedBy: ManagedBy},
			},
			Data: map[string]string{stateKey: string(data)},
		}
		err = s.c.Create(ctx, &cm)
	} else if err == nil {
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[stateKey] = string(data)
		err = s.c.Update(ctx, &cm)
	}
	if err != nil {
		return fmt.Errorf("save state to ConfigMap %s/%s: %w", s.namespace, s.name, explain(err))
	}
	s.last = bytes.Clone(data)
	return nil
}
