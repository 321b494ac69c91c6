package kube

import (
	"crypto/sha256"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"merlin.dev/merlin/internal/kubetest"
	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/servingtest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// kubeEnv is one test's namespace on the shared API server, with KServe's
// part played by fakeKServe.
type kubeEnv struct {
	env  *kubetest.Env
	ns   string
	fake *fakeKServe
}

func newKubeEnv(t *testing.T) *kubeEnv {
	env := kubetest.Get(t)
	ns := env.Namespace(t)
	return &kubeEnv{env: env, ns: ns, fake: startFakeKServe(t, env.Client, ns)}
}

func (e *kubeEnv) opts() Options {
	return Options{
		Namespace: e.ns, Gateway: "istio-system/ingressgateway", Host: "models.example.com",
		PollInterval: 50 * time.Millisecond,
		Logger:       slog.New(slog.DiscardHandler),
	}
}

// target returns a kubernetes target on the test's namespace, closed when
// the test ends.
func (e *kubeEnv) target(t *testing.T) *Kube {
	t.Helper()
	return newTarget(t, e.env.Config, e.opts())
}

func newTarget(t *testing.T, cfg *rest.Config, opts Options) *Kube {
	t.Helper()
	k, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	return k
}

// waitFor polls cond until it holds. It does not time the target: it
// gives up only shortly before the test binary's own deadline (-timeout),
// to report what it saw last instead of a goroutine dump.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	limit, bounded := t.Deadline()
	limit = limit.Add(-15 * time.Second)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if (bounded && time.Now().After(limit)) || t.Context().Err() != nil {
			t.Fatalf("waiting for %s: %s", what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testVersion is version n of model, with a storage URI like an MLflow
// source's.
func testVersion(model string, n int) serving.Version {
	digest := fmt.Sprintf("%x", sha256.Sum256(fmt.Appendf(nil, "%s/%d", model, n)))
	return serving.Version{
		ID: serving.VersionID(model, digest), Model: model, Digest: digest,
		Type: manifest.TypeSKLearn, Protocol: manifest.ProtocolV1,
		StorageURI: "gs://models/" + model + "/" + digest[:8],
		Replicas:   manifest.Replicas{Min: 1, Max: 1},
		Annotations: map[string]string{
			"merlin.dev/git-repo": "https://example.com/models.git", "merlin.dev/git-commit": digest[:40],
		},
	}
}

func TestContract(t *testing.T) {
	servingtest.Run(t, servingtest.Harness{
		Eventually: 20 * time.Second,
		Setup: func(t *testing.T) servingtest.Backend {
			e := newKubeEnv(t)
			return servingtest.Backend{
				New:     func(t *testing.T) serving.Target { return e.target(t) },
				Version: func(_ *testing.T, model string, n int) serving.Version { return testVersion(model, n) },
				Broken: func(_ *testing.T, model string) serving.Version {
					v := testVersion(model, 999)
					e.fake.setBroken(v.ID, true)
					return v
				},
			}
		},
	})
}
