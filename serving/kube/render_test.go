package kube

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current rendering")

var testConfig = Config{
	Namespace: "models", Gateway: "istio-system/ingressgateway", Host: "models.example.com",
	Registry: "registry.example.com/models",
}

// version returns a version of model as the reconciler builds it.
func version(model, digest string, typ manifest.ModelType, protocol manifest.Protocol) serving.Version {
	return serving.Version{
		ID: serving.VersionID(model, digest), Model: model, Digest: digest, Type: typ, Protocol: protocol,
		StorageURI: "s3://models/" + model + "/" + digest[:8] + "/",
		Resources:  manifest.Resources{CPU: "500m", Memory: "1Gi"},
		Replicas:   manifest.Replicas{Min: 1, Max: 3},
		Env:        []manifest.EnvVar{{Name: "LOG_LEVEL", Value: "info"}},
		Labels:     map[string]string{"team": "risk"},
		Annotations: map[string]string{
			"merlin.dev/git-repo": "https://github.com/acme/models.git", "merlin.dev/git-commit": "0123456789abcdef0123456789abcdef01234567",
			"merlin.dev/mlflow-run-id": "0f3a9c1b2d4e",
		},
	}
}

const (
	digestA = "3f2a9c1be4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f"
	digestB = "a1b2c3d4e5f60718293a4b5c6d7e8f903f2a9c1be4d5f60718293a4b5c6d7e8f"
	digestC = "c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f903f2a9c1be4d5f60718293a4b"
)

func single(v serving.Version) serving.Deployment {
	return serving.Deployment{Model: v.Model, Versions: []serving.Version{v}, Traffic: map[string]int{v.ID: 100}}
}

// goldenCases are the rendering cases pinned in testdata/golden.
func goldenCases() map[string]serving.Deployment {
	sk := version("fraud", digestA, manifest.TypeSKLearn, manifest.ProtocolV1)
	sk2 := version("fraud", digestB, manifest.TypeSKLearn, manifest.ProtocolV1)
	// A pull request's preview: built from the branch's commit.
	pr := version("fraud", digestC, manifest.TypeSKLearn, manifest.ProtocolV1)
	pr.Annotations = maps.Clone(pr.Annotations)
	pr.Annotations["merlin.dev/git-commit"] = "89abcdef0123456789abcdef0123456789abcdef"
	xgb := version("churn", digestA, manifest.TypeXGBoost, manifest.ProtocolV2)

	custom := version("ranker", digestA, manifest.TypeCustom, manifest.ProtocolV2)
	custom.StorageURI = ""
	custom.Image = "registry.example.com/models/ranker@sha256:" + digestB

	zero := version("idle", digestA, manifest.TypeSKLearn, manifest.ProtocolV1)
	zero.Replicas = manifest.Replicas{Min: 0, Max: 2}
	zero.StorageURI = "" // source.path: served from its modelcar image
	zero.Resources = manifest.Resources{}
	zero.Env = nil

	return map[string]serving.Deployment{
		"sklearn-v1":    single(sk),
		"xgboost-v2":    single(xgb),
		"canary-90-10":  {Model: "fraud", Versions: []serving.Version{sk, sk2}, Traffic: map[string]int{sk.ID: 90, sk2.ID: 10}},
		"shadow-20":     {Model: "fraud", Versions: []serving.Version{sk, sk2}, Traffic: map[string]int{sk.ID: 100}, Mirrors: []serving.Mirror{{Version: sk2.ID, Percent: 20}}},
		"custom-image":  single(custom),
		"scale-to-zero": single(zero),
		// A shadow rollout's candidate (20%) beside a pull request's
		// preview (10%), as the reconciler deploys them: the preview is
		// listed with no client traffic.
		"shadow-and-preview": {
			Model: "fraud", Versions: []serving.Version{sk, sk2, pr}, Traffic: map[string]int{sk.ID: 100, pr.ID: 0},
			Mirrors: []serving.Mirror{{Version: sk2.ID, Percent: 20}, {Version: pr.ID, Percent: 10}},
		},
	}
}

func renderYAML(t *testing.T, d serving.Deployment) []byte {
	t.Helper()
	objs, err := Render(d, testConfig)
	if err != nil {
		t.Fatal(err)
	}
	us, err := objs.Unstructured()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WriteYAML(&b, us); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestRenderGolden(t *testing.T) {
	for name, d := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			got := renderYAML(t, d)
			file := filepath.Join("testdata", "golden", name+".yaml")
			if *update {
				if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test ./serving/kube -run TestRenderGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("rendering differs from %s (rerun with -update if intended):\n%s", file, got)
			}
		})
	}
}

// TestRenderDecisions checks the rendering decisions the golden files
// embody, so a careless -update cannot silently drop them.
func TestRenderDecisions(t *testing.T) {
	cases := goldenCases()
	canary, err := Render(cases["canary-90-10"], testConfig)
	if err != nil {
		t.Fatal(err)
	}
	route := canary.VirtualService.Spec.Http[0]
	if len(route.Route) != 2 || route.Route[0].Weight != 90 || route.Route[1].Weight != 10 ||
		route.Route[0].Destination.Host != "fraud-3f2a9c1b-predictor.models.svc.cluster.local" {
		t.Errorf("canary routes = %v", route.Route)
	}
	if route.Rewrite != nil {
		t.Errorf("route rewrites %v; predictors serve the model name", route.Rewrite)
	}
	for _, isvc := range canary.InferenceServices {
		m := isvc.Spec.Predictor.Model
		if len(m.Args) != 1 || m.Args[0] != "--model_name=fraud" {
			t.Errorf("%s args = %v, want the model name", isvc.Name, m.Args)
		}
		if isvc.Labels[LabelManagedBy] != "merlin" || isvc.Labels[LabelModel] != "fraud" || isvc.Labels[LabelVersion] != isvc.Name || isvc.Labels["team"] != "risk" {
			t.Errorf("%s labels = %v", isvc.Name, isvc.Labels)
		}
		if isvc.Annotations["merlin.dev/git-commit"] == "" || isvc.Annotations[AnnotationDigest] == "" || isvc.Annotations["merlin.dev/mlflow-run-id"] == "" {
			t.Errorf("%s annotations = %v", isvc.Name, isvc.Annotations)
		}
	}
	shadow, err := Render(cases["shadow-20"], testConfig)
	if err != nil {
		t.Fatal(err)
	}
	r := shadow.VirtualService.Spec.Http[0]
	if len(r.Mirrors) != 1 || r.Mirrors[0].Destination.GetHost() != "fraud-a1b2c3d4-predictor.models.svc.cluster.local" ||
		r.Mirrors[0].Percentage.GetValue() != 20 || len(r.Route) != 1 || r.Mirror != nil || r.MirrorPercentage != nil {
		t.Errorf("shadow route = %v", r)
	}
	both, err := Render(cases["shadow-and-preview"], testConfig)
	if err != nil {
		t.Fatal(err)
	}
	r = both.VirtualService.Spec.Http[0]
	var mirrors []string
	for _, m := range r.Mirrors {
		mirrors = append(mirrors, fmt.Sprintf("%s %g", m.Destination.GetHost(), m.Percentage.GetValue()))
	}
	if want := []string{"fraud-a1b2c3d4-predictor.models.svc.cluster.local 20", "fraud-c7d8e9f0-predictor.models.svc.cluster.local 10"}; !slices.Equal(mirrors, want) ||
		len(r.Route) != 1 || len(both.InferenceServices) != 3 {
		t.Errorf("shadow and preview: mirrors %v (want %v), routes %v, %d InferenceServices", mirrors, want, r.Route, len(both.InferenceServices))
	}
	zero, err := Render(cases["scale-to-zero"], testConfig)
	if err != nil {
		t.Fatal(err)
	}
	p := zero.InferenceServices[0].Spec.Predictor
	if *p.MinReplicas != 0 || *p.Model.StorageURI != "oci://registry.example.com/models/idle:"+digestA {
		t.Errorf("scale-to-zero predictor: min %d storage %s", *p.MinReplicas, *p.Model.StorageURI)
	}
	custom, err := Render(cases["custom-image"], testConfig)
	if err != nil {
		t.Fatal(err)
	}
	if c := custom.InferenceServices[0]; c.Spec.Predictor.Model != nil || c.Spec.Predictor.Containers[0].Image == "" || c.Annotations[AnnotationImageDigest] != "sha256:"+digestB {
		t.Errorf("custom predictor = %+v, annotations %v", c.Spec.Predictor, c.Annotations)
	}
}

func TestRenderErrors(t *testing.T) {
	pyfunc := version("pf", digestA, manifest.TypePyFunc, manifest.ProtocolV1)
	noStorage := version("np", digestA, manifest.TypeSKLearn, manifest.ProtocolV1)
	noStorage.StorageURI = ""
	badQty := version("bq", digestA, manifest.TypeSKLearn, manifest.ProtocolV1)
	badQty.Resources.CPU = "lots"
	sk := version("fraud", digestA, manifest.TypeSKLearn, manifest.ProtocolV1)
	noRegistry := testConfig
	noRegistry.Registry = ""
	for _, c := range []struct {
		name string
		d    serving.Deployment
		cfg  Config
		want string
	}{
		{"pyfunc v1", single(pyfunc), testConfig, "speaks only protocol v2; set spec.protocol: v2"},
		{"no storage", single(noStorage), noRegistry, "set kubernetes.registry"},
		{"bad quantity", single(badQty), testConfig, `version bq-3f2a9c1b: cpu "lots"`},
		{"bad traffic", serving.Deployment{Model: "fraud", Versions: []serving.Version{sk}, Traffic: map[string]int{sk.ID: 50}}, testConfig, "adds up to 50%"},
		{"no host", single(sk), Config{Namespace: "models"}, "host is required"},
		{"bad namespace", single(sk), Config{Namespace: "Models", Host: "h"}, `namespace "Models"`},
		{"bad gateway", single(sk), Config{Namespace: "models", Host: "h", Gateway: "istio-system/Ingress"}, "want [namespace/]name"},
	} {
		_, err := Render(c.d, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}
