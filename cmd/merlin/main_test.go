package main

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// chdirRoot runs the test from the repository root, so that paths in
// output read as a user at the root would see them.
func chdirRoot(t *testing.T) {
	t.Helper()
	t.Chdir(filepath.Join("..", ".."))
}

// chdirKubeExamples works in a copy of the repository's examples without
// analysis.minAgreement, which the kubernetes target refuses (it does not
// compare predictions; TestValidateTarget checks the error).
func chdirKubeExamples(t *testing.T) {
	t.Helper()
	root := t.TempDir()
	err := filepath.WalkDir(filepath.Join("..", "..", "examples"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if d.Name() == "merlin.yaml" {
			lines := strings.SplitAfter(string(data), "\n")
			lines = slices.DeleteFunc(lines, func(l string) bool { return strings.Contains(l, "minAgreement:") })
			data = []byte(strings.Join(lines, ""))
		}
		dst := filepath.Join(root, strings.TrimPrefix(filepath.ToSlash(p), "../../"))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(root)
}

func merlin(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(t.Context(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestValidateExamples(t *testing.T) {
	chdirRoot(t)
	for _, args := range [][]string{{"validate", "examples/..."}, {"validate", "examples"}, {"validate", "examples/iris-sklearn/merlin.yaml", "examples/iris-xgboost"}} {
		code, out, errOut := merlin(t, args...)
		if code != exitOK || !strings.Contains(out, "2 models in 2 files: valid") {
			t.Errorf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
}

// TestValidateBroken runs `merlin validate` on every broken variant under
// testdata/broken; each file lists the lines it must produce as
// "# want: LINE:COL: field: message" comments.
func TestValidateBroken(t *testing.T) {
	chdirRoot(t)
	files, err := filepath.Glob("testdata/broken/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no broken variants: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, line := range strings.Split(string(data), "\n") {
				if w, ok := strings.CutPrefix(line, "# want: "); ok {
					want = append(want, file+":"+w)
				}
			}
			code, out, _ := merlin(t, "validate", file)
			if code != exitFailure {
				t.Errorf("exit code %d, want %d", code, exitFailure)
			}
			got := strings.Split(strings.TrimSpace(out), "\n")
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("output:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func TestValidateJSON(t *testing.T) {
	chdirRoot(t)
	code, out, _ := merlin(t, "validate", "--format", "json", "testdata/broken/steps.yaml", "examples/iris-sklearn")
	var report struct {
		Valid  bool
		Files  int
		Models int
		Errors []struct {
			File, Field, Message string
			Line, Column         int
		}
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if code != exitFailure || report.Valid || report.Files != 2 || report.Models != 2 || len(report.Errors) != 2 {
		t.Fatalf("exit %d, report %+v", code, report)
	}
	e := report.Errors[0]
	if e.File != "testdata/broken/steps.yaml" || e.Line != 13 || e.Column != 17 || e.Field != "spec.rollout.steps[1]" {
		t.Errorf("first error %+v", e)
	}
}

func TestValidateDuplicateAcrossFiles(t *testing.T) {
	chdirRoot(t)
	code, out, _ := merlin(t, "validate", "examples/iris-sklearn", "testdata/broken/unknown-field.yaml")
	if code != exitFailure || !strings.Contains(out, `testdata/broken/unknown-field.yaml:5:9: metadata.name: duplicate model name "iris-sklearn" (first declared at examples/iris-sklearn/merlin.yaml:`) {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

func TestValidateNothingFound(t *testing.T) {
	code, _, errOut := merlin(t, "validate", t.TempDir())
	if code != exitFailure || !strings.Contains(errOut, "no merlin.yaml found under") {
		t.Errorf("exit %d: %s", code, errOut)
	}
}

func TestRender(t *testing.T) {
	chdirRoot(t)
	code, out, errOut := merlin(t, "render", "examples/iris-xgboost")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"# Source: examples/iris-xgboost/merlin.yaml", "name: iris-xgboost", "protocol: v2", "failureLimit: 2", "mirrorPercent: 100", "      - 20\n      - 50\n      - 100\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("render output lacks %q:\n%s", want, out)
		}
	}
	if code, _, errOut := merlin(t, "render", "testdata/broken/steps.yaml"); code != exitFailure || !strings.Contains(errOut, "steps.yaml:13:17") {
		t.Errorf("render of a broken manifest: exit %d: %s", code, errOut)
	}
}

func TestUsage(t *testing.T) {
	if code, _, _ := merlin(t); code != exitUsage {
		t.Errorf("no args: exit %d", code)
	}
	if code, _, errOut := merlin(t, "frobnicate"); code != exitUsage || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d %s", code, errOut)
	}
	if code, out, _ := merlin(t, "version"); code != exitOK || !strings.HasPrefix(out, "merlin ") {
		t.Errorf("version: exit %d %s", code, out)
	}
	if code, _, _ := merlin(t, "validate", "--format", "xml"); code != exitUsage {
		t.Errorf("bad format: exit %d", code)
	}
}
