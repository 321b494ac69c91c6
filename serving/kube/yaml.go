package kube

import (
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Unstructured returns the objects in apply order: the InferenceServices,
// then the VirtualService.
func (o *Objects) Unstructured() ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, isvc := range o.InferenceServices {
		u, err := ToUnstructured(isvc)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	u, err := ToUnstructured(o.VirtualService)
	if err != nil {
		return nil, err
	}
	return append(out, u), nil
}

// WriteYAML writes objects as a YAML stream, one document each, exactly as
// they are applied.
func WriteYAML(w io.Writer, objs []*unstructured.Unstructured) error {
	for _, u := range objs {
		data, err := yaml.Marshal(u.Object)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", u.GetKind(), u.GetName(), err)
		}
		if _, err := fmt.Fprintf(w, "---\n%s", data); err != nil {
			return err
		}
	}
	return nil
}
