package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// exampleRow returns one input row for a model directory: the first row
// of MLflow's saved input example when there is one, otherwise a row of
// ones as wide as the signature's input.
func exampleRow(dir string) []float64 {
	data, err := os.ReadFile(filepath.Join(dir, "MLmodel"))
	if err != nil {
		return []float64{1}
	}
	var mlmodel struct {
		Example struct {
			Path string `yaml:"artifact_path"`
		} `yaml:"saved_input_example_info"`
		Signature struct {
			Inputs string `yaml:"inputs"`
		} `yaml:"signature"`
	}
	if yaml.Unmarshal(data, &mlmodel) != nil {
		return []float64{1}
	}
	if p := mlmodel.Example.Path; p != "" {
		if row := firstRow(filepath.Join(dir, p)); row != nil {
			return row
		}
	}
	return onesFor(mlmodel.Signature.Inputs)
}

// firstRow reads the first row of an input example: {"inputs": [[...]]},
// {"instances": [[...]]} or a split-oriented frame {"data": [[...]]}.
func firstRow(path string) []float64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var doc map[string]json.RawMessage
	if json.Unmarshal(data, &doc) != nil {
		return nil
	}
	for _, key := range []string{"inputs", "instances", "data"} {
		var rows [][]float64
		if json.Unmarshal(doc[key], &rows) == nil && len(rows) > 0 {
			return rows[0]
		}
	}
	return nil
}

// onesFor sizes a row from an MLflow signature: a tensor spec's last
// dimension, or the number of columns.
func onesFor(inputs string) []float64 {
	var specs []struct {
		Type   string `json:"type"`
		Tensor struct {
			Shape []int `json:"shape"`
		} `json:"tensor-spec"`
	}
	n := 1
	if json.Unmarshal([]byte(inputs), &specs) == nil && len(specs) > 0 {
		if s := specs[0]; s.Type == "tensor" && len(s.Tensor.Shape) > 1 && s.Tensor.Shape[len(s.Tensor.Shape)-1] > 0 {
			n = s.Tensor.Shape[len(s.Tensor.Shape)-1]
		} else if s.Type != "tensor" {
			n = len(specs)
		}
	}
	row := make([]float64, n)
	for i := range row {
		row[i] = 1
	}
	return row
}

func jsonRow(row []float64) string {
	parts := make([]string, len(row))
	for i, v := range row {
		parts[i] = strconv.FormatFloat(v, 'f', -1, 64)
		if !strings.ContainsAny(parts[i], ".e") {
			parts[i] += ".0"
		}
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
