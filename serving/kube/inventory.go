package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/fluxcd/pkg/ssa"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The inventory of a model is the list of InferenceServices merlin has
// applied for it, kept in a ConfigMap next to them (like the inventory of
// a Flux Kustomization). Pruning deletes only objects that are both in the
// inventory and labelled as the model's, so an object someone else made —
// even one that copies merlin's labels — is never deleted.
const inventoryKey = "inferenceservices"

func inventoryName(model string) string { return "merlin-inventory-" + model }

func (k *Kube) readInventory(ctx context.Context, model string) ([]string, error) {
	var cm corev1.ConfigMap
	err := k.c.Get(ctx, client.ObjectKey{Namespace: k.cfg.Namespace, Name: inventoryName(model)}, &cm)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read inventory of %s: %w", model, explain(err))
	}
	return strings.Fields(cm.Data[inventoryKey]), nil
}

func (k *Kube) writeInventory(ctx context.Context, model string, names []string) error {
	cm := &corev1.ConfigMap{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{
			Name: inventoryName(model), Namespace: k.cfg.Namespace,
			Labels: map[string]string{LabelManagedBy: ManagedBy, LabelModel: model},
		},
		Data: map[string]string{inventoryKey: strings.Join(names, "\n")},
	}
	u, err := ToUnstructured(cm)
	if err != nil {
		return err
	}
	if _, err := k.rm.Apply(ctx, u, ssa.DefaultApplyOptions()); err != nil {
		return fmt.Errorf("write inventory of %s: %w", model, explain(err))
	}
	return nil
}

// union returns the sorted names in a or b.
func union(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}
