package manifest

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/invopop/jsonschema"
	yaml "go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/api/resource"
)

// scalarDecoder is implemented by types that read themselves from a YAML
// scalar. The returned error is a plain message; the decoder adds the
// position.
type scalarDecoder interface {
	decodeScalar(n *yaml.Node) error
}

// Duration is a time.Duration written with a unit, as in "30s" or "1m30s".
type Duration time.Duration

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d *Duration) decodeScalar(n *yaml.Node) error {
	if n.Tag == "!!int" || n.Tag == "!!float" {
		return fmt.Errorf("duration %s needs a unit, e.g. %ss", n.Value, n.Value)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("invalid duration %q: use a number with a unit, e.g. 30s, 250ms, 1m", n.Value)
	}
	if v < 0 {
		return fmt.Errorf("duration %q must not be negative", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as Go formats it ("30s", "1m30s").
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(time.Duration(d).String())), nil
}

// UnmarshalJSON reads a duration written by MarshalJSON.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// JSONSchema describes durations for editors.
func (Duration) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{
		Type:     "string",
		Pattern:  `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`,
		Examples: []any{"30s", "250ms", "1m"},
	}
}

// Percent is a percentage written with a % sign, as in "1%" or "99.5%". The
// value is in percent: 1% is Percent(1).
type Percent float64

// Fraction returns the percentage as a fraction of one (1% → 0.01).
func (p Percent) Fraction() float64 { return float64(p) / 100 }

func (p *Percent) decodeScalar(n *yaml.Node) error {
	s := strings.TrimSpace(n.Value)
	num, ok := strings.CutSuffix(s, "%")
	if !ok {
		return fmt.Errorf("percentage %q needs a %% sign, e.g. %s%%", n.Value, s)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil {
		return fmt.Errorf("invalid percentage %q: write a number from 0%% to 100%%", n.Value)
	}
	*p = Percent(v)
	return nil
}

// String formats the percentage as "1%".
func (p Percent) String() string { return strconv.FormatFloat(float64(p), 'f', -1, 64) + "%" }

// MarshalYAML writes the percentage as "1%".
func (p Percent) MarshalYAML() (any, error) { return p.String(), nil }

// MarshalJSON writes the percentage as "1%".
func (p Percent) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(p.String())), nil }

// UnmarshalJSON reads a percentage written by MarshalJSON.
func (p *Percent) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("percentage: %w", err)
	}
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil {
		return fmt.Errorf("percentage: %w", err)
	}
	*p = Percent(v)
	return nil
}

// JSONSchema describes percentages for editors.
func (Percent) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{
		Type:     "string",
		Pattern:  `^(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?)%$`,
		Examples: []any{"1%", "95%"},
	}
}

// Quantity is a Kubernetes resource quantity such as "500m", "2" or "1Gi".
type Quantity string

// Value is the quantity as an integer (bytes, for a size), rounded up; 0
// when unset or invalid (the decoder and validation refuse invalid ones).
func (q Quantity) Value() int64 {
	if q == "" {
		return 0
	}
	v, err := resource.ParseQuantity(string(q))
	if err != nil {
		return 0
	}
	return v.Value()
}

func (q *Quantity) decodeScalar(n *yaml.Node) error {
	if n.Tag != "!!str" && n.Tag != "!!int" && n.Tag != "!!float" {
		return fmt.Errorf("expected a quantity such as 500m or 1Gi, got %s", tagName(n.Tag))
	}
	if _, err := resource.ParseQuantity(n.Value); err != nil {
		return fmt.Errorf("invalid quantity %q: use Kubernetes notation such as 500m, 2 or 1Gi", n.Value)
	}
	*q = Quantity(n.Value)
	return nil
}

// JSONSchema describes quantities for editors.
func (Quantity) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{
		AnyOf: []*jsonschema.Schema{
			{Type: "string", Pattern: `^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$`},
			{Type: "number"},
		},
	}
}

func enumSchema[T ~string](values []T) *jsonschema.Schema {
	s := &jsonschema.Schema{Type: "string"}
	for _, v := range values {
		s.Enum = append(s.Enum, string(v))
	}
	return s
}

// JSONSchema lists the model types.
func (ModelType) JSONSchema() *jsonschema.Schema { return enumSchema(ModelTypes) }

// JSONSchema lists the protocols.
func (Protocol) JSONSchema() *jsonschema.Schema { return enumSchema(Protocols) }

// JSONSchema lists the strategies.
func (Strategy) JSONSchema() *jsonschema.Schema { return enumSchema(Strategies) }

// JSONSchema lists the promotion modes.
func (Promotion) JSONSchema() *jsonschema.Schema { return enumSchema(Promotions) }

func oneOf[T ~string](v T, allowed []T) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	hint := ""
	if s := suggest(string(v), names); s != "" {
		hint = fmt.Sprintf(" (did you mean %q?)", s)
	}
	return fmt.Errorf("%q must be one of %s%s", v, strings.Join(names, ", "), hint)
}
