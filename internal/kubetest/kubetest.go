// Package kubetest runs a real Kubernetes API server (kube-apiserver + etcd
// through controller-runtime's envtest) with the real KServe and Istio CRDs
// installed, for tests that talk to a cluster.
//
// Starting the control plane costs about ten seconds, so a test binary
// starts it at most once: call Main from TestMain, and Get from each test.
// The server starts on the first Get (a binary whose selected tests never
// call Get pays nothing) and stops when Main's tests are done.
//
//	func TestMain(m *testing.M) { kubetest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		env := kubetest.Get(t)           // skips, or fails when CI=true, without binaries
//		ns := env.Namespace(t)           // a fresh namespace per test
//		env.Client.Create(t.Context(), ...)
//	}
//
// Binaries: KUBEBUILDER_ASSETS names the directory holding kube-apiserver
// and etcd (`make test` sets it from hack/test-deps.sh). When it is unset,
// the directory hack/test-deps.sh fills,
// ~/.cache/merlin/kubebuilder-assets/<KubeVersion>, is used if it exists.
//
// CRDs are read from the Go module cache, at the versions go.mod requires:
// github.com/kserve/kserve's config/crd/full/serving.kserve.io_inferenceservices.yaml
// and istio.io/api's kubernetes/customresourcedefinitions.gen.yaml. They
// are created (not client-side applied: the InferenceService CRD is 1 MB,
// too large for the last-applied annotation).
//
// The API server can be stopped and started again while etcd keeps
// running (Env.StopAPIServer, Env.StartAPIServer), to test what clients do
// during an outage. It comes back on the same address with the same
// certificates, so existing clients reconnect; tests that do this must not
// run in parallel with other tests of the same binary.
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	kservev1beta1 "github.com/kserve/kserve/pkg/apis/serving/v1beta1"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// KubeVersion is the kube-apiserver version hack/test-deps.sh builds.
const KubeVersion = "v1.34.3"

// CRD files, as module path and path inside the module.
var crdFiles = []struct{ module, file string }{
	{"github.com/kserve/kserve", "config/crd/full/serving.kserve.io_inferenceservices.yaml"},
	{"istio.io/api", "kubernetes/customresourcedefinitions.gen.yaml"},
}

// Env is a running API server.
type Env struct {
	// Config reaches the API server as a cluster admin.
	Config *rest.Config
	// Client is a controller-runtime client with Scheme.
	Client client.Client
	// Scheme knows the core, KServe v1beta1 and Istio networking v1 types.
	Scheme *runtime.Scheme

	env     *envtest.Environment
	certDir string
	mu      sync.Mutex // serialises stop/start
}

var (
	once    sync.Once
	shared  *Env
	initErr error
	skipMsg string
)

// Main runs the tests of a binary and stops the shared API server, if a
// test started one. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if shared != nil {
		if err := shared.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "kubetest: stop control plane: %v\n", err)
		}
	}
	os.Exit(code)
}

// Get returns the binary's API server, starting it on first use. Without
// kube-apiserver and etcd the test is skipped, or fails when CI=true.
func Get(t testing.TB) *Env {
	t.Helper()
	once.Do(func() {
		dir, reason := AssetsDir()
		if dir == "" {
			skipMsg = reason
			return
		}
		shared, initErr = start(dir)
	})
	if skipMsg != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("kubetest: %s (CI=true: this test must run)", skipMsg)
		}
		t.Skipf("kubetest: %s; run hack/test-deps.sh or `make test`", skipMsg)
	}
	if initErr != nil {
		t.Fatalf("kubetest: %v", initErr)
	}
	return shared
}

// AssetsDir finds the directory holding kube-apiserver and etcd. When it
// finds none it returns "" and why.
func AssetsDir() (dir, reason string) {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d, ""
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", "KUBEBUILDER_ASSETS is unset and there is no home directory"
		}
		cache = filepath.Join(home, ".cache")
	}
	d := filepath.Join(cache, "merlin", "kubebuilder-assets", KubeVersion)
	if _, err := os.Stat(filepath.Join(d, "kube-apiserver")); err != nil {
		return "", "KUBEBUILDER_ASSETS is unset and " + d + " holds no kube-apiserver"
	}
	return d, ""
}

// NewScheme returns a scheme with the core Kubernetes types, KServe
// v1beta1 and Istio networking v1.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(kservev1beta1.AddToScheme(s))
	utilruntime.Must(istionetworkingv1.AddToScheme(s))
	return s
}

// CRDPaths returns the CRD files in the module cache, downloading the
// modules if needed (`go mod download`, at the versions go.mod selects).
func CRDPaths() ([]string, error) {
	args := []string{"mod", "download", "-json"}
	for _, c := range crdFiles {
		args = append(args, c.module)
	}
	cmd := exec.Command("go", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %v: %w: %s", args, err, stderr.Bytes())
	}
	dirs := map[string]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var m struct{ Path, Dir, Error string }
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go mod download: %w", err)
		}
		if m.Error != "" {
			return nil, fmt.Errorf("go mod download %s: %s", m.Path, m.Error)
		}
		dirs[m.Path] = m.Dir
	}
	var paths []string
	for _, c := range crdFiles {
		p := filepath.Join(dirs[c.module], filepath.FromSlash(c.file))
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("CRD file of %s: %w", c.module, err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

func start(assets string) (*Env, error) {
	logf.SetLogger(logr.Discard())
	crds, err := CRDPaths()
	if err != nil {
		return nil, err
	}
	// A certificate directory of our own survives an API server restart, so
	// the server keeps its serving certificate and clients keep trusting it.
	certDir, err := os.MkdirTemp("", "kubetest-apiserver-")
	if err != nil {
		return nil, err
	}
	scheme := NewScheme()
	te := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDInstallOptions: envtest.CRDInstallOptions{
			Paths:              crds,
			ErrorIfPathMissing: true,
			Scheme:             scheme,
		},
		ControlPlaneStartTimeout: time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	te.ControlPlane.APIServer = &envtest.APIServer{CertDir: certDir}
	cfg, err := te.Start()
	if err != nil {
		_ = te.Stop()
		os.RemoveAll(certDir)
		return nil, fmt.Errorf("start control plane from %s: %w", assets, err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		_ = te.Stop()
		os.RemoveAll(certDir)
		return nil, err
	}
	return &Env{Config: cfg, Client: c, Scheme: scheme, env: te, certDir: certDir}, nil
}

func (e *Env) stop() error {
	defer os.RemoveAll(e.certDir)
	return e.env.Stop()
}

// StopAPIServer stops kube-apiserver; etcd keeps running with the data.
func (e *Env) StopAPIServer() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.env.ControlPlane.APIServer.Stop()
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, on the
// same address with the same certificates, and waits until it is healthy.
func (e *Env) StartAPIServer() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.env.ControlPlane.APIServer.Start()
}

// User returns a config that reaches the API server as the named user,
// authenticated by a client certificate, with the permissions RBAC grants
// it (none until the test binds a role).
func (e *Env) User(t testing.TB, name string, groups ...string) *rest.Config {
	t.Helper()
	u, err := e.env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		t.Fatalf("kubetest: add user %s: %v", name, err)
	}
	return u.Config()
}

// Namespace creates a namespace with a random name for one test. Namespaces
// are never deleted: envtest runs no namespace controller to finalise them.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "test-" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := e.Client.Create(ctx, ns); err != nil {
		t.Fatalf("kubetest: create namespace: %v", err)
	}
	return name
}
