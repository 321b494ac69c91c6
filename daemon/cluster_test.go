package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	kservev1beta1 "github.com/kserve/kserve/pkg/apis/serving/v1beta1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"merlin.dev/merlin/internal/gittest"
	"merlin.dev/merlin/internal/kubetest"
	"merlin.dev/merlin/internal/poll"
	"merlin.dev/merlin/internal/testlog"
	"merlin.dev/merlin/server"
	"merlin.dev/merlin/serving"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// useKubeconfig points KUBECONFIG at the test's API server, so the daemon
// finds the cluster the way it does outside a pod.
func useKubeconfig(t *testing.T, cfg *rest.Config) {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["test"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test"}
	kc.CurrentContext = "test"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", path)
}

// running is a daemon started by a test.
type running struct {
	d    *Daemon
	api  string
	stop context.CancelFunc
	done chan error
	logs *testlog.Buffer // the daemon's log
}

func startDaemon(t *testing.T, name, config string) *running {
	t.Helper()
	return startDaemonWith(t, name, config, Options{})
}

// startDaemonWith starts a daemon with opts (its Logger is the test's).
func startDaemonWith(t *testing.T, name, config string, opts Options) *running {
	t.Helper()
	cfg, err := ParseConfig(name+".yaml", []byte(config))
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon %s log:\n%s", name, logs)
		}
	})
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("daemon", name)
	d, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{d: d, api: "http://" + d.APIAddr(), stop: cancel, done: make(chan error, 1), logs: logs}
	go func() { r.done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			t.Errorf("daemon %s: Run = %v", name, err)
		}
	})
	return r
}

// model reads one model's status from the daemon's API.
func (r *running) model(t *testing.T, name string) serving.ModelStatus {
	t.Helper()
	var ms serving.ModelStatus
	call(t, http.MethodGet, r.api+"/api/v1/models/"+name, &ms)
	return ms
}

func (r *running) identity() string { id, _ := r.d.Leader(); return id }

func (r *running) leading() bool { _, l := r.d.Leader(); return l }

// call makes one API request, decodes a JSON answer into out, and returns
// the status code and headers.
func call(t *testing.T, method, url string, out any) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json") // rollout commands are JSON calls
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, url, resp.StatusCode, body, err)
		}
	}
	return resp.StatusCode, resp.Header
}

// TestClusterLeaderElection runs two daemons with target kubernetes against
// a real API server and a real git repository. The first leads: it
// reconciles and applies the model's InferenceService. The second stands
// by: it serves /healthz and the API read-only, reconciles nothing, and
// refuses commands with 503 naming the leader. When the first stops, it
// releases the Lease and the second takes over within the lease duration,
// reconciles from Git and applies the next commit.
func TestClusterLeaderElection(t *testing.T) {
	env := kubetest.Get(t)
	models, leases := env.Namespace(t), env.Namespace(t)
	useKubeconfig(t, env.Config)
	repo := gittest.NewRepo(t)
	repo.CommitDir("add iris", filepath.Join("..", "examples", "iris-sklearn"), "iris")

	const leaseDuration = 15 * time.Second
	config := func(stateDir string) string {
		return fmt.Sprintf(`repositories: [{name: models, url: %q, interval: 1s}]
target: kubernetes
kubernetes:
  namespace: %s
  registry: registry.example.com/models
  gateway: istio-system/ingressgateway
  host: models.example.com
  leaderElection: {namespace: %s, leaseDuration: %s, renewDeadline: 10s, retryPeriod: 250ms}
local: {stateDir: %q}
server: {listen: "127.0.0.1:0"}
`, repo.Bare, models, leases, leaseDuration, stateDir)
	}
	isvcs := func() []string {
		var list kservev1beta1.InferenceServiceList
		if err := env.Client.List(context.Background(), &list, client.InNamespace(models), client.MatchingLabels{"merlin.dev/model": "iris-sklearn"}); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, o := range list.Items {
			names = append(names, o.Name)
		}
		slices.Sort(names)
		return names
	}
	holder := func() string { return leaseHolder(t, env, leases) }

	a := startDaemon(t, "a", config(t.TempDir()))
	poll.Until(t, time.Minute, "a applies the model", func() bool { return len(isvcs()) == 1 })
	first := isvcs()[0]
	if !a.leading() || holder() != a.identity() {
		t.Fatalf("a applied but leads %v; Lease holder %q, a is %q", a.leading(), holder(), a.identity())
	}

	b := startDaemon(t, "b", config(t.TempDir()))
	poll.Until(t, 30*time.Second, "b sees a lead", func() bool { return b.d.elector.Leader() == a.identity() })
	if b.leading() {
		t.Fatal("b leads while a holds the Lease")
	}
	if code, _ := call(t, "GET", b.api+"/healthz", nil); code != http.StatusOK {
		t.Errorf("follower /healthz = %d", code)
	}
	var repos struct{ Repos []server.RepoView }
	if code, h := call(t, "GET", b.api+"/api/v1/repos", &repos); code != http.StatusOK || h.Get("X-Merlin-Leader") != a.identity() {
		t.Errorf("follower GET /api/v1/repos = %d, X-Merlin-Leader %q", code, h.Get("X-Merlin-Leader"))
	}
	if len(repos.Repos) != 1 || repos.Repos[0].SHA != "" || len(repos.Repos[0].Models) != 0 {
		t.Errorf("the follower reconciled: %+v", repos)
	}
	var refusal map[string]string
	if code, h := call(t, "POST", b.api+"/api/v1/models/iris-sklearn/pause", &refusal); code != http.StatusServiceUnavailable || refusal["leader"] != a.identity() ||
		h.Get("X-Frame-Options") != "DENY" {
		t.Errorf("follower POST pause = %d %v %v, want 503 naming %s, with the security headers", code, refusal, h, a.identity())
	}
	// The follower's refusal comes after the API's own checks.
	if resp, err := http.Post(b.api+"/api/v1/models/iris-sklearn/pause", "text/plain", strings.NewReader("{}")); err != nil {
		t.Error(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("follower text/plain POST = %d, want 415: the API's checks come first", resp.StatusCode)
	}
	poll.Until(t, time.Minute, "a's API lists the model", func() bool {
		code, _ := call(t, "GET", a.api+"/api/v1/models/iris-sklearn", nil)
		return code == http.StatusOK
	})
	// The leader takes the command. Its state goes to the cluster, and the
	// follower must pick it up when it takes over (it did not exist when
	// the follower started).
	if code, _ := call(t, "POST", a.api+"/api/v1/models/iris-sklearn/pause", nil); code != http.StatusOK {
		t.Errorf("leader POST pause = %d, want 200", code)
	}
	var state corev1.ConfigMap
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: models, Name: "merlin-state-models"}, &state); err != nil {
		t.Errorf("rollout state is not in the cluster: %v", err)
	}

	a.stop()
	if err := <-a.done; err != nil {
		t.Fatalf("a.Run = %v", err)
	}
	a.done <- nil // for the cleanup
	released := time.Now()
	poll.Until(t, leaseDuration, "b takes over", func() bool { return b.leading() && holder() == b.identity() })
	t.Logf("b led %s after a stopped", time.Since(released).Round(time.Millisecond))
	poll.Until(t, time.Minute, "b reconciles", func() bool {
		call(t, "GET", b.api+"/api/v1/repos", &repos)
		return len(repos.Repos) == 1 && repos.Repos[0].SHA != ""
	})

	var model serving.ModelStatus
	if code, _ := call(t, "GET", b.api+"/api/v1/models/iris-sklearn", &model); code != http.StatusOK || !model.Paused {
		t.Errorf("after the take-over b shows %d %+v; want the model paused, as a left it", code, model)
	}
	if code, _ := call(t, "POST", b.api+"/api/v1/models/iris-sklearn/resume", nil); code != http.StatusOK {
		t.Errorf("new leader POST resume = %d, want 200", code)
	}

	// b applies what is committed next.
	repo.Commit("iris: log more", map[string]string{"iris/merlin.yaml": irisManifestWithEnv(t)})
	poll.Until(t, time.Minute, "b applies the new version", func() bool { return len(isvcs()) == 2 })
	if got := isvcs(); !slices.Contains(got, first) {
		t.Errorf("InferenceServices %v lost %s while the new version is not ready", got, first)
	}
}

func leaseHolder(t *testing.T, env *kubetest.Env, ns string) string {
	t.Helper()
	var l coordinationv1.Lease
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: DefaultLeaseName}, &l); err != nil {
		return ""
	}
	return ptr.Deref(l.Spec.HolderIdentity, "")
}

// irisManifestWithEnv is the example's manifest with a serving setting
// changed, which makes a new version.
func irisManifestWithEnv(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "examples", "iris-sklearn", "merlin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Replace(string(data), "  protocol: v1\n", "  protocol: v1\n  env: [{name: LOG_LEVEL, value: debug}]\n", 1)
	if out == string(data) {
		t.Fatal("examples/iris-sklearn/merlin.yaml has no protocol line to add env after")
	}
	return out
}
