package config

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	kservev1beta1 "github.com/kserve/kserve/pkg/apis/serving/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"knative.dev/pkg/apis"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"merlin.dev/merlin/daemon"
	"merlin.dev/merlin/daemon/leader"
	"merlin.dev/merlin/internal/kubetest"
	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/kube"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// build runs `kustomize build config/default` in-process.
func build(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionUnspecified // the kustomization's sortOptions decide
	m, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), "default")
	if err != nil {
		t.Fatalf("kustomize build config/default: %v", err)
	}
	var out []*unstructured.Unstructured
	for _, r := range m.Resources() {
		// Through JSON, so that numbers are int64 as the API machinery wants.
		data, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(data); err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

// find returns the one object of a kind (and name, when given).
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind && (name == "" || o.GetName() == name) {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s %q in the build, found %d", kind, name, len(found))
	}
	return found[0]
}

func typed[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	var v T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

// TestBuild checks that the install's parts agree with one another: the
// daemon's configuration is valid, the probes and the Service reach the
// port it serves /healthz on, the models RoleBinding is in the namespace it
// deploys to, and the pod runs locked down.
func TestBuild(t *testing.T) {
	objs := build(t)
	if objs[0].GetKind() != "Namespace" {
		t.Errorf("first object is a %s; namespaces must come first", objs[0].GetKind())
	}
	for _, o := range objs {
		ns := o.GetNamespace()
		switch {
		case o.GetKind() == "Namespace" || o.GetKind() == "ClusterRole":
			if ns != "" {
				t.Errorf("cluster-scoped %s/%s has namespace %q", o.GetKind(), o.GetName(), ns)
			}
		case o.GetKind() == "RoleBinding" && o.GetName() == "merlin-models":
			if ns != "models" {
				t.Errorf("RoleBinding merlin-models is in %q, want the models namespace", ns)
			}
		case ns != "merlin-system":
			t.Errorf("%s/%s is in namespace %q, want merlin-system", o.GetKind(), o.GetName(), ns)
		}
	}

	cm := typed[corev1.ConfigMap](t, find(t, objs, "ConfigMap", ""))
	cfg, err := daemon.ParseConfig("merlin.config.yaml", []byte(cm.Data["merlin.config.yaml"]))
	if err != nil {
		t.Fatalf("the generated ConfigMap's merlin.config.yaml: %v", err)
	}
	if cfg.Target != "kubernetes" || !cfg.Kubernetes.LeaderElection.On() {
		t.Errorf("config: target %q, leader election %v", cfg.Target, cfg.Kubernetes.LeaderElection.On())
	}
	if rb := find(t, objs, "RoleBinding", "merlin-models"); rb.GetNamespace() != cfg.Kubernetes.Namespace {
		t.Errorf("models RoleBinding in %q but kubernetes.namespace is %q", rb.GetNamespace(), cfg.Kubernetes.Namespace)
	}
	_, port, err := net.SplitHostPort(cfg.Server.Listen)
	if err != nil {
		t.Fatal(err)
	}

	dep := typed[appsv1.Deployment](t, find(t, objs, "Deployment", "merlin"))
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]
	if i := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "http" }); i < 0 || fmt.Sprint(c.Ports[i].ContainerPort) != port {
		t.Errorf("container port http = %+v, server.listen port %s", c.Ports, port)
	}
	for name, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port.String() != "http" {
			t.Errorf("%s probe = %+v, want GET /healthz on port http", name, p)
		}
	}
	if cfg.Local.StateDir == "" || !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == cfg.Local.StateDir }) {
		t.Errorf("state dir %q is not a mounted volume (the root filesystem is read-only)", cfg.Local.StateDir)
	}
	if v := pod.Volumes[slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.ConfigMap != nil })]; v.ConfigMap.Name != cm.Name {
		t.Errorf("Deployment mounts ConfigMap %q, the build generates %q", v.ConfigMap.Name, cm.Name)
	}
	if pod.ServiceAccountName != "merlin" {
		t.Errorf("service account %q", pod.ServiceAccountName)
	}
	psc, sc := pod.SecurityContext, c.SecurityContext
	switch {
	case psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot:
		t.Error("pod is not runAsNonRoot")
	case psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("pod seccomp profile is not RuntimeDefault")
	case sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("root filesystem is writable")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("privilege escalation is allowed")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}):
		t.Errorf("capabilities = %+v, want drop ALL", sc.Capabilities)
	case c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero():
		t.Errorf("resources = %+v", c.Resources)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if env["POD_NAMESPACE"] != "metadata.namespace" || env["POD_NAME"] != "metadata.name" {
		t.Errorf("leader election needs POD_NAMESPACE and POD_NAME from the downward API; env %v", env)
	}

	apiToken(t, objs, cfg, c)

	svc := typed[corev1.Service](t, find(t, objs, "Service", "merlin"))
	if svc.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("Service type %q: the API stays inside the cluster (ClusterIP)", svc.Spec.Type)
	}
	if len(svc.Spec.Ports) != 1 || fmt.Sprint(svc.Spec.Ports[0].Port) != port || svc.Spec.Ports[0].TargetPort.String() != "http" {
		t.Errorf("Service ports = %+v, want %s → http", svc.Spec.Ports, port)
	}
	for k, v := range svc.Spec.Selector {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("Service selects %s=%s; the pods have %v", k, v, dep.Spec.Template.Labels)
		}
	}
}

// apiToken checks that rollout commands need a token the install does not
// carry: server.tokenEnv names a variable the container reads from a
// Secret the operator creates (config/README.md), and no Secret is built,
// so that no token is ever committed.
func apiToken(t *testing.T, objs []*unstructured.Unstructured, cfg *daemon.Config, c corev1.Container) {
	t.Helper()
	if host, _, _ := net.SplitHostPort(cfg.Server.Listen); cfg.Server.TokenEnv == "" {
		t.Fatalf("server.listen %s (host %q) without server.tokenEnv: the daemon refuses to start", cfg.Server.Listen, host)
	}
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == cfg.Server.TokenEnv })
	if i < 0 {
		t.Fatalf("container env lacks %s (server.tokenEnv): %+v", cfg.Server.TokenEnv, c.Env)
	}
	switch ref := c.Env[i].ValueFrom; {
	case c.Env[i].Value != "":
		t.Errorf("%s has a literal value in the Deployment; it must come from a Secret", cfg.Server.TokenEnv)
	case ref == nil || ref.SecretKeyRef == nil:
		t.Errorf("%s is not from a Secret: %+v", cfg.Server.TokenEnv, c.Env[i])
	case ref.SecretKeyRef.Name != "merlin-api-token" || ref.SecretKeyRef.Key != "token":
		t.Errorf("%s from Secret %s key %s; config/README.md creates merlin-api-token key token", cfg.Server.TokenEnv, ref.SecretKeyRef.Name, ref.SecretKeyRef.Key)
	case ref.SecretKeyRef.Optional != nil && *ref.SecretKeyRef.Optional:
		t.Errorf("%s is optional: a pod without the token must not start", cfg.Server.TokenEnv)
	}
	for _, o := range objs {
		if o.GetKind() == "Secret" {
			t.Errorf("the build has Secret %s: tokens are created in the cluster, never committed", o.GetName())
		}
	}
}

// modelsNamespace creates the namespace models are deployed to: the
// install binds its role there but does not create it (config/README.md).
func modelsNamespace(t *testing.T, c client.Client) {
	t.Helper()
	err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "models"}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// apply server-side applies one object as `kubectl apply --server-side`
// would, and returns the object the server answered with.
func apply(ctx context.Context, c client.Client, o *unstructured.Unstructured, opts ...client.ApplyOption) (*unstructured.Unstructured, error) {
	out := o.DeepCopy()
	opts = append(opts, client.FieldOwner("kubectl"), client.ForceOwnership)
	return out, c.Apply(ctx, client.ApplyConfigurationFromUnstructured(out), opts...)
}

// TestDryRunApply applies the build to a real kube-apiserver with a
// server-side dry run (kubectl apply --server-side --dry-run=server -k):
// the API server validates and defaults every object, and accepts all.
// Namespaces are created first, as a staged apply does, because objects in
// a namespace that a dry run did not create are refused.
func TestDryRunApply(t *testing.T) {
	env := kubetest.Get(t)
	ctx, c := context.Background(), env.Client
	modelsNamespace(t, c)
	objs := build(t)
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			if _, err := apply(ctx, c, o); err != nil {
				t.Fatalf("apply Namespace %s: %v", o.GetName(), err)
			}
		}
	}
	for _, o := range objs {
		got, err := apply(ctx, c, o, client.DryRunAll)
		if err != nil {
			t.Errorf("dry-run apply %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
			continue
		}
		if ts := got.GetCreationTimestamp(); ts.IsZero() && o.GetKind() != "Namespace" {
			t.Errorf("%s %s: the server's answer has no creation timestamp: %v", o.GetKind(), o.GetName(), got.Object)
		}
		if o.GetKind() != "Namespace" {
			// Nothing but the namespaces was written.
			err := c.Get(ctx, client.ObjectKeyFromObject(o), o.DeepCopy())
			if !apierrors.IsNotFound(err) {
				t.Errorf("%s %s exists after a dry run (err %v)", o.GetKind(), o.GetName(), err)
			}
		}
	}
	// The server defaulted the Deployment, so it read the whole object.
	got, err := apply(ctx, c, find(t, objs, "Deployment", "merlin"), client.DryRunAll)
	if err != nil {
		t.Fatal(err)
	}
	if dep := typed[appsv1.Deployment](t, got); dep.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || dep.Spec.RevisionHistoryLimit == nil {
		t.Errorf("Deployment not defaulted by the server: strategy %+v", dep.Spec.Strategy)
	}
}

const serviceAccount = "system:serviceaccount:merlin-system:merlin"

var serviceAccountGroups = []string{"system:serviceaccounts", "system:serviceaccounts:merlin-system", "system:authenticated"}

// TestRBAC applies the install for real and asks the API server what its
// ServiceAccount may do: exactly what the daemon does, where it does it.
// Then it runs leader election as that ServiceAccount.
func TestRBAC(t *testing.T) {
	env := kubetest.Get(t)
	ctx, c := context.Background(), env.Client
	modelsNamespace(t, c)
	for _, o := range build(t) {
		if _, err := apply(ctx, c, o); err != nil {
			t.Fatalf("apply %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	kube := kubernetes.NewForConfigOrDie(env.Config)
	can := func(ns, verb, group, resource string) bool {
		sar, err := kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{
				User: serviceAccount, Groups: serviceAccountGroups,
				ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: group, Resource: resource},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return sar.Status.Allowed
	}
	all := []string{"get", "list", "watch", "create", "update", "patch", "delete"}
	type rule struct {
		ns, group, resource string
		verbs               []string
	}
	allowed := []rule{
		{"models", "serving.kserve.io", "inferenceservices", all},
		{"models", "networking.istio.io", "virtualservices", all},
		{"models", "", "configmaps", all},
		{"models", "", "events", []string{"create", "patch"}},
		{"merlin-system", "coordination.k8s.io", "leases", []string{"get", "create", "update"}},
		{"merlin-system", "", "events", []string{"create", "patch"}},
	}
	for _, r := range allowed {
		for _, v := range all {
			want := slices.Contains(r.verbs, v)
			if got := can(r.ns, v, r.group, r.resource); got != want {
				t.Errorf("%s %s.%s in %s: allowed %v, want %v", v, r.resource, r.group, r.ns, got, want)
			}
		}
	}
	denied := []rule{
		{"default", "serving.kserve.io", "inferenceservices", []string{"create", "list"}},
		{"merlin-system", "serving.kserve.io", "inferenceservices", []string{"create"}},
		{"default", "networking.istio.io", "virtualservices", []string{"patch"}},
		{"models", "", "secrets", []string{"get", "list"}},
		{"merlin-system", "", "secrets", []string{"get"}},
		{"models", "", "pods", []string{"list", "create"}},
		{"models", "apps", "deployments", []string{"create"}},
		{"models", "coordination.k8s.io", "leases", []string{"update"}},
		{"merlin-system", "", "configmaps", []string{"update"}},
		{"", "", "namespaces", []string{"list", "create"}},
		{"", "rbac.authorization.k8s.io", "clusterroles", []string{"create", "escalate"}},
	}
	for _, r := range denied {
		for _, v := range r.verbs {
			if can(r.ns, v, r.group, r.resource) {
				t.Errorf("%s %s.%s in %q is allowed; the daemon does not need it", v, r.resource, r.group, r.ns)
			}
		}
	}

	targetAsServiceAccount(t, env)

	// Leader election as the ServiceAccount: the Role is enough to take,
	// hold and release the Lease the daemon's configuration names.
	e, err := leader.New(kubernetes.NewForConfigOrDie(asServiceAccount(env)), leader.Config{
		Namespace: "merlin-system", Name: daemon.DefaultLeaseName, Identity: "merlin-pod",
		LeaseDuration: daemon.DefaultLeaseDuration, RenewDeadline: daemon.DefaultRenewDeadline, RetryPeriod: 250 * time.Millisecond,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	led := false
	if err := e.Run(rctx, func(lctx context.Context) { led = true; cancel() }); err != nil {
		t.Fatal(err)
	}
	if !led {
		t.Fatal("the ServiceAccount never acquired the Lease")
	}
	l, err := kube.CoordinationV1().Leases("merlin-system").Get(ctx, daemon.DefaultLeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
		t.Errorf("Lease still held by %q: the ServiceAccount could not release it", *l.Spec.HolderIdentity)
	}
}

// asServiceAccount is the API server's address with the daemon's
// ServiceAccount as the user.
func asServiceAccount(env *kubetest.Env) *rest.Config {
	as := rest.CopyConfig(env.Config)
	as.Impersonate = rest.ImpersonationConfig{UserName: serviceAccount, Groups: serviceAccountGroups}
	return as
}

// targetAsServiceAccount runs the kubernetes target as the ServiceAccount
// through a whole model lifecycle: apply a version (InferenceService,
// inventory ConfigMap, then the VirtualService once ready), apply a second
// one and prune the first, report, delete. The RBAC must allow every call.
// The test marks InferenceServices Ready, as KServe would.
func targetAsServiceAccount(t *testing.T, env *kubetest.Env) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kt, err := kube.New(asServiceAccount(env), kube.Options{
		Namespace: "models", Host: "models.example.com", Gateway: "istio-system/ingressgateway",
		Registry: "registry.example.com/models", PollInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer kt.Close()
	markReady := func() {
		var list kservev1beta1.InferenceServiceList
		if err := env.Client.List(ctx, &list, client.InNamespace("models")); err != nil {
			return
		}
		for i := range list.Items {
			isvc := &list.Items[i]
			if isvc.Status.ObservedGeneration == isvc.Generation {
				continue
			}
			isvc.Status.Conditions = []apis.Condition{{Type: apis.ConditionReady, Status: corev1.ConditionTrue, LastTransitionTime: apis.VolatileTime{Inner: metav1.Now()}}}
			isvc.Status.ObservedGeneration = isvc.Generation
			_ = env.Client.Status().Update(ctx, isvc)
		}
	}
	// Apply does not wait for readiness: KServe's part (marking the
	// version Ready) is played here, then the target's loop routes the
	// version and prunes the previous one, all as the ServiceAccount.
	apply := func(digest string) {
		t.Helper()
		v := serving.Version{ID: serving.VersionID("rbac", digest), Model: "rbac", Digest: digest, Type: manifest.TypeSKLearn,
			Protocol: manifest.ProtocolV1, StorageURI: "gs://bucket/rbac", Replicas: manifest.Replicas{Min: 1, Max: 1}}
		if err := kt.Apply(ctx, serving.Deployment{Model: "rbac", Versions: []serving.Version{v}, Traffic: map[string]int{v.ID: 100}}); err != nil {
			t.Fatalf("kubernetes target as the ServiceAccount: %v", err)
		}
		for {
			markReady()
			st, err := kt.Status(ctx)
			if err == nil && len(st) == 1 && len(st[0].Versions) == 1 && st[0].Versions[0].Version == v.ID && st[0].Versions[0].Weight == 100 {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("status as the ServiceAccount = %+v, %v; want %s alone with all traffic", st, err, v.ID)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	apply("aaaaaaaa11")
	apply("bbbbbbbb22")
	if err := kt.Delete(ctx, "rbac"); err != nil {
		t.Fatalf("delete as the ServiceAccount: %v", err)
	}
}
