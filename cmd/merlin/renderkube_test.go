package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"merlin.dev/merlin/builder"
	"merlin.dev/merlin/internal/kubetest"
	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

func decodeObjects(t *testing.T, out string) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			return objs
		} else if err != nil {
			t.Fatalf("output is not YAML: %v\n%s", err, out)
		}
		if u.Object != nil {
			objs = append(objs, u)
		}
	}
}

// TestRenderKubernetes renders the examples, checks that version IDs are
// the digests the daemon's builder computes from the repository tree, and
// creates the printed objects on a real API server with the KServe and
// Istio CRDs.
func TestRenderKubernetes(t *testing.T) {
	env := kubetest.Get(t) // in the module: it reads the CRDs from the module cache
	chdirKubeExamples(t)
	code, out, errOut := merlin(t, "render", "--target", "kubernetes", "--namespace", "models",
		"--host", "models.example.com", "--gateway", "istio-system/ingressgateway",
		"--registry", "registry.example.com/models", "examples/...")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	objs := decodeObjects(t, out)
	if len(objs) != 4 {
		t.Fatalf("%d objects, want an InferenceService and a VirtualService per example", len(objs))
	}

	// The daemon builds from the repository tree at the model directory.
	files, err := manifest.Load(os.DirFS("."), "examples/iris-sklearn")
	if err != nil || len(files) != 1 {
		t.Fatalf("load example: %v", err)
	}
	f := files[0]
	b, err := builder.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Build(os.DirFS("."), "examples/iris-sklearn/model", f.Models[0])
	if err != nil {
		t.Fatal(err)
	}
	id := serving.VersionID("iris-sklearn", res.Digest)
	byName := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		byName[o.GetKind()+"/"+o.GetName()] = o
	}
	isvc := byName["InferenceService/"+id]
	if isvc == nil {
		t.Fatalf("no InferenceService %s in:\n%s", id, out)
	}
	uri, _, _ := unstructured.NestedString(isvc.Object, "spec", "predictor", "model", "storageUri")
	if uri != "oci://registry.example.com/models/iris-sklearn:"+res.Digest {
		t.Errorf("storageUri %q", uri)
	}
	vs := byName["VirtualService/iris-sklearn"]
	if vs == nil || !strings.Contains(out, "host: "+id+"-predictor.models.svc.cluster.local") {
		t.Errorf("no VirtualService routing to %s:\n%s", id, out)
	}

	ns := env.Namespace(t)
	for _, o := range objs {
		o.SetNamespace(ns)
		if err := env.Client.Create(t.Context(), o); err != nil {
			t.Errorf("create %s/%s: %v", o.GetKind(), o.GetName(), err)
		}
	}
}

func TestRenderKubernetesConfig(t *testing.T) {
	chdirKubeExamples(t)
	cfg := filepath.Join(t.TempDir(), "merlin.config.yaml")
	if err := os.WriteFile(cfg, []byte(`repositories: [{name: models, url: /srv/models}]
target: kubernetes
kubernetes: {namespace: prod, registry: registry.example.com/models, gateway: istio-system/ingressgateway, host: models.example.com}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := merlin(t, "render", "--target", "kubernetes", "--config", cfg, "--host", "ml.example.com", "examples/iris-xgboost")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"namespace: prod", "- ml.example.com", "oci://registry.example.com/models/iris-xgboost:", "name: xgboost"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestRenderKubernetesErrors(t *testing.T) {
	chdirKubeExamples(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name, "merlin.yaml")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mlflow := write("mlflow", "apiVersion: merlin.dev/v1\nkind: Model\nmetadata: {name: fraud}\nspec:\n  type: sklearn\n  source: {mlflow: 'models:/fraud/3'}\n")
	uri := write("uri", "apiVersion: merlin.dev/v1\nkind: Model\nmetadata: {name: churn}\nspec:\n  type: xgboost\n  source: {uri: 's3://bucket/churn/'}\n")
	flags := []string{"render", "--target", "kubernetes", "--namespace", "models", "--host", "models.example.com"}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"render", "--target", "kubernetes", "examples"}, exitUsage, "no namespace"},
		{[]string{"render", "--target", "kubernetes", "--namespace", "Models", "--host", "h", "examples"}, exitUsage, `namespace "Models"`},
		{append(flags, "examples/iris-sklearn"), exitFailure, "set kubernetes.registry"},
		{append(flags, mlflow), exitFailure, "spec.source.mlflow: render cannot resolve MLflow reference"},
		{[]string{"render", "--target", "cluster", "examples"}, exitUsage, "unknown --target"},
	} {
		code, _, errOut := merlin(t, c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", c.args, code, errOut, c.code, c.want)
		}
	}
	// A URI source needs no registry: the URI is the storageUri.
	code, out, errOut := merlin(t, append(flags, uri)...)
	if code != exitOK || !strings.Contains(out, "storageUri: s3://bucket/churn/") || !bytes.Contains([]byte(out), []byte("name: churn-")) {
		t.Errorf("uri source: exit %d\n%s%s", code, out, errOut)
	}
}
