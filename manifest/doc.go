// Package manifest reads merlin.yaml: the Go types of the v1 manifest,
// strict decoding that reports every problem as path:line:col, defaults,
// and validation.
//
// Parsing is pure (Parse takes bytes); checks that need the repository —
// source.path must exist, model names must be unique — take an fs.FS, so
// the daemon runs them on a git tree and `merlin validate` on the disk.
//
// The decoder walks yaml.v3 nodes itself rather than using yaml.Unmarshal:
// that is what lets it keep going after the first error, point at the
// offending key or value, tell "unset" from "set to zero" (replicas.min: 0),
// and remember where each field was written for errors found later.
package manifest
