package manifest

import (
	"fmt"
	"io"

	yaml "go.yaml.in/yaml/v3"
)

// Render writes models as YAML documents with every default filled in,
// each headed by a comment naming its file: the manifests as the daemon
// sees them.
func Render(w io.Writer, models []*Model) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	for _, m := range models {
		var n yaml.Node
		if err := n.Encode(m); err != nil {
			return fmt.Errorf("render %s: %w", m.Metadata.Name, err)
		}
		n.HeadComment = "Source: " + m.File
		if err := enc.Encode(&n); err != nil {
			return fmt.Errorf("render %s: %w", m.Metadata.Name, err)
		}
	}
	return enc.Close()
}
