package kube

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	kservev1beta1 "github.com/kserve/kserve/pkg/apis/serving/v1beta1"
	"github.com/kserve/kserve/pkg/constants"
	istioapi "istio.io/api/networking/v1alpha3"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving"
)

// Labels and annotations Merlin puts on the objects it applies.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelModel     = "merlin.dev/model"
	LabelVersion   = "merlin.dev/version"
	ManagedBy      = "merlin"

	AnnotationDigest      = "merlin.dev/digest"
	AnnotationImageDigest = "merlin.dev/image-digest"
)

// Config is what rendering needs besides the deployment.
type Config struct {
	// Namespace receives the objects. Required.
	Namespace string
	// Gateway is the Istio Gateway ("namespace/name", or "name" in
	// Namespace) the VirtualService binds to; empty binds it to the mesh
	// (sidecars) only.
	Gateway string
	// Host is the host name clients use. Required.
	Host string
	// Registry is where built model images go (registry.example.com/models).
	// A version without StorageURI or Image is served from the modelcar
	// image oci://<Registry>/<model>:<digest> (see ModelcarURI).
	Registry string
	// Runtimes overrides the KServe ServingRuntime per model type; the
	// defaults are in DefaultRuntimes.
	Runtimes map[manifest.ModelType]string
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if errs := validation.IsDNS1123Label(c.Namespace); len(errs) > 0 {
		return fmt.Errorf("kubernetes namespace %q: %s", c.Namespace, strings.Join(errs, "; "))
	}
	if c.Host == "" {
		return fmt.Errorf("kubernetes host is required (the host name clients call, e.g. models.example.com)")
	}
	if c.Gateway != "" {
		ns, name, ok := strings.Cut(c.Gateway, "/")
		if !ok {
			ns, name = c.Namespace, c.Gateway
		}
		if validation.IsDNS1123Label(ns) != nil || validation.IsDNS1123Subdomain(name) != nil {
			return fmt.Errorf("kubernetes gateway %q: want [namespace/]name, e.g. istio-system/ingressgateway", c.Gateway)
		}
	}
	return nil
}

// Objects are what one model's deployment renders to.
type Objects struct {
	// InferenceServices, one per version, in the deployment's order.
	InferenceServices []*kservev1beta1.InferenceService
	// VirtualService routes the model's requests to its versions.
	VirtualService *istionetworkingv1.VirtualService
}

// servingRuntime is how Merlin serves one model type on KServe.
type servingRuntime struct {
	format string // model.modelFormat.name
	name   string // the ServingRuntime
	// nameArg: the runtime takes the served model name as --model_name
	// (KServe's Python servers and TF Serving; KServe appends predictor
	// args to the runtime's, and the last value wins).
	nameArg bool
	// nameEnv: the runtime takes it as MLSERVER_MODEL_NAME (MLServer;
	// KServe keeps a value the predictor sets).
	nameEnv bool
	// v2Only: the runtime speaks only the Open Inference Protocol.
	v2Only bool
}

var runtimes = map[manifest.ModelType]servingRuntime{
	manifest.TypeSKLearn:    {format: "sklearn", name: "kserve-sklearnserver", nameArg: true},
	manifest.TypeXGBoost:    {format: "xgboost", name: "kserve-xgbserver", nameArg: true},
	manifest.TypeTensorFlow: {format: "tensorflow", name: "kserve-tensorflow-serving", nameArg: true},
	manifest.TypePyTorch:    {format: "pytorch", name: "kserve-torchserve"},
	manifest.TypeONNX:       {format: "onnx", name: "kserve-tritonserver"},
	manifest.TypePyFunc:     {format: "mlflow", name: "kserve-mlserver", nameEnv: true, v2Only: true},
}

// DefaultRuntimes are the KServe ClusterServingRuntimes (as installed by
// KServe) that serve each model type.
func DefaultRuntimes() map[manifest.ModelType]string {
	out := map[manifest.ModelType]string{}
	for t, r := range runtimes {
		out[t] = r.name
	}
	return out
}

// Render returns the objects that serve d. It is pure: the same deployment
// and config always give the same objects.
func Render(d serving.Deployment, cfg Config) (*Objects, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if len(d.Versions) == 0 {
		return nil, fmt.Errorf("deployment of %s lists no versions", d.Model)
	}
	out := &Objects{}
	for _, v := range d.Versions {
		isvc, err := InferenceService(v, cfg)
		if err != nil {
			return nil, err
		}
		out.InferenceServices = append(out.InferenceServices, isvc)
	}
	out.VirtualService = VirtualService(d, cfg)
	return out, nil
}

// PredictorHost is the cluster-local host of a version's predictor: KServe
// names the predictor Service <isvc>-predictor.
func PredictorHost(versionID, namespace string) string {
	return versionID + "-predictor." + namespace + ".svc.cluster.local"
}

// ModelcarURI is where a version built by Merlin is fetched from when its
// model has no URI of its own (source.path): the builder pushes the model
// files as an OCI image (a KServe modelcar) tagged with the full content
// digest.
func ModelcarURI(registry string, v serving.Version) string {
	return "oci://" + strings.TrimSuffix(registry, "/") + "/" + v.Model + ":" + v.Digest
}

// InferenceService renders one version.
func InferenceService(v serving.Version, cfg Config) (*kservev1beta1.InferenceService, error) {
	if errs := validation.IsDNS1123Label(v.ID); len(errs) > 0 {
		return nil, fmt.Errorf("version %q is not a valid InferenceService name: %s", v.ID, strings.Join(errs, "; "))
	}
	res, err := resources(v)
	if err != nil {
		return nil, err
	}
	labels := map[string]string{}
	maps.Copy(labels, v.Labels)
	labels[LabelManagedBy], labels[LabelModel], labels[LabelVersion] = ManagedBy, v.Model, v.ID
	annotations := map[string]string{}
	maps.Copy(annotations, v.Annotations)
	if v.Digest != "" {
		annotations[AnnotationDigest] = v.Digest
	}
	if _, digest, ok := strings.Cut(v.Image, "@"); ok {
		annotations[AnnotationImageDigest] = digest
	}
	env := make([]corev1.EnvVar, 0, len(v.Env)+1)
	for _, e := range v.Env {
		env = append(env, corev1.EnvVar{Name: e.Name, Value: e.Value})
	}
	isvc := &kservev1beta1.InferenceService{
		TypeMeta: metav1.TypeMeta{APIVersion: kservev1beta1.SchemeGroupVersion.String(), Kind: "InferenceService"},
		ObjectMeta: metav1.ObjectMeta{
			Name: v.ID, Namespace: cfg.Namespace, Labels: labels, Annotations: annotations,
		},
	}
	p := &isvc.Spec.Predictor
	p.MinReplicas = ptr.To(int32(v.Replicas.Min))
	p.MaxReplicas = int32(max(v.Replicas.Max, v.Replicas.Min, 1))

	storage := v.StorageURI
	if storage == "" && v.Image == "" && v.Type != manifest.TypeCustom && cfg.Registry != "" {
		storage = ModelcarURI(cfg.Registry, v)
	}
	if v.Type == manifest.TypeCustom || storage == "" {
		// A custom image, or an image Merlin built with the model inside.
		if v.Image == "" {
			return nil, fmt.Errorf("version %s: the kubernetes target needs a storage URI (source.uri or source.mlflow) or an image; for source.path models set kubernetes.registry so the model is served from its modelcar image", v.ID)
		}
		p.Containers = []corev1.Container{{
			Name: constants.InferenceServiceContainerName, Image: v.Image, Env: env, Resources: res,
		}}
		return isvc, nil
	}
	rt, ok := runtimes[v.Type]
	if !ok {
		return nil, fmt.Errorf("version %s: model type %q has no KServe runtime", v.ID, v.Type)
	}
	protocol := cmp.Or(v.Protocol, manifest.ProtocolV1)
	if rt.v2Only && protocol != manifest.ProtocolV2 {
		return nil, fmt.Errorf("version %s: KServe serves %s models with %s, which speaks only protocol v2; set spec.protocol: v2", v.ID, v.Type, rt.name)
	}
	m := &kservev1beta1.ModelSpec{
		ModelFormat: kservev1beta1.ModelFormat{Name: rt.format},
		Runtime:     ptr.To(cmp.Or(cfg.Runtimes[v.Type], rt.name)),
	}
	m.StorageURI = ptr.To(storage)
	m.ProtocolVersion = ptr.To(constants.InferenceServiceProtocol(protocol))
	if rt.nameArg {
		m.Args = []string{"--model_name=" + v.Model}
	}
	if rt.nameEnv {
		env = append(env, corev1.EnvVar{Name: constants.MLServerModelNameEnv, Value: v.Model})
	}
	m.Env, m.Resources = env, res
	p.Model = m
	return isvc, nil
}

// resources turns the manifest's cpu and memory into equal requests and
// limits (a model server's latency should not depend on its neighbours).
func resources(v serving.Version) (corev1.ResourceRequirements, error) {
	list := corev1.ResourceList{}
	for name, q := range map[corev1.ResourceName]manifest.Quantity{corev1.ResourceCPU: v.Resources.CPU, corev1.ResourceMemory: v.Resources.Memory} {
		if q == "" {
			continue
		}
		parsed, err := resource.ParseQuantity(string(q))
		if err != nil {
			return corev1.ResourceRequirements{}, fmt.Errorf("version %s: %s %q: %w", v.ID, name, q, err)
		}
		list[name] = parsed
	}
	if len(list) == 0 {
		return corev1.ResourceRequirements{}, nil
	}
	return corev1.ResourceRequirements{Requests: list, Limits: list.DeepCopy()}, nil
}

// VirtualService renders the model's routing: one HTTP route matching the
// model's V1 and V2 paths, split by weight across the versions that get
// traffic, with one entry of Istio's mirrors list (Istio ≥ 1.22) per
// shadow, in the deployment's order, each with its own percentage.
//
// Every predictor serves the model under the model's name (not its
// InferenceService name, see InferenceService), so the route needs no URI
// rewrite and one weighted route covers all versions: Istio rewrites per
// route, not per destination, so per-version names could not be split.
func VirtualService(d serving.Deployment, cfg Config) *istionetworkingv1.VirtualService {
	primary := primaryVersion(d)
	labels := map[string]string{}
	for _, v := range d.Versions {
		if v.ID == primary {
			maps.Copy(labels, v.Labels)
		}
	}
	labels[LabelManagedBy], labels[LabelModel], labels[LabelVersion] = ManagedBy, d.Model, primary
	vs := &istionetworkingv1.VirtualService{
		TypeMeta:   metav1.TypeMeta{APIVersion: istionetworkingv1.SchemeGroupVersion.String(), Kind: "VirtualService"},
		ObjectMeta: metav1.ObjectMeta{Name: d.Model, Namespace: cfg.Namespace, Labels: labels},
	}
	vs.Spec.Hosts = []string{cfg.Host}
	if cfg.Gateway != "" {
		vs.Spec.Gateways = []string{cfg.Gateway}
	}
	route := &istioapi.HTTPRoute{Name: d.Model, Match: matches(d.Model)}
	ids := slices.Collect(maps.Keys(d.Traffic))
	slices.SortFunc(ids, func(a, b string) int {
		return cmp.Or(cmp.Compare(d.Traffic[b], d.Traffic[a]), cmp.Compare(a, b))
	})
	for _, id := range ids {
		if d.Traffic[id] == 0 {
			continue // a version without traffic needs no route entry
		}
		route.Route = append(route.Route, &istioapi.HTTPRouteDestination{
			Destination: &istioapi.Destination{Host: PredictorHost(id, cfg.Namespace)},
			Weight:      int32(d.Traffic[id]),
			Headers: &istioapi.Headers{Response: &istioapi.Headers_HeaderOperations{
				Set: map[string]string{"X-Merlin-Version": id},
			}},
		})
	}
	for _, m := range d.Mirrors {
		if m.Percent <= 0 {
			continue // a shadow without a share needs no mirror
		}
		route.Mirrors = append(route.Mirrors, &istioapi.HTTPMirrorPolicy{
			Destination: &istioapi.Destination{Host: PredictorHost(m.Version, cfg.Namespace)},
			Percentage:  &istioapi.Percent{Value: float64(m.Percent)},
		})
	}
	vs.Spec.Http = []*istioapi.HTTPRoute{route}
	return vs
}

// matches selects exactly one model's requests: /v1/models/<m> and
// /v1/models/<m>:verb, /v2/models/<m> and /v2/models/<m>/... . Plain
// prefixes would also catch a model whose name starts with <m>.
func matches(model string) []*istioapi.HTTPMatchRequest {
	exact := func(s string) *istioapi.HTTPMatchRequest {
		return &istioapi.HTTPMatchRequest{Uri: &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Exact{Exact: s}}}
	}
	prefix := func(s string) *istioapi.HTTPMatchRequest {
		return &istioapi.HTTPMatchRequest{Uri: &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Prefix{Prefix: s}}}
	}
	return []*istioapi.HTTPMatchRequest{
		exact("/v1/models/" + model), prefix("/v1/models/" + model + ":"),
		exact("/v2/models/" + model), prefix("/v2/models/" + model + "/"),
	}
}

// primaryVersion is the version with the most traffic (the lowest ID among
// equals): the VirtualService's merlin.dev/version label.
func primaryVersion(d serving.Deployment) string {
	best := ""
	for id, w := range d.Traffic {
		if best == "" || w > d.Traffic[best] || (w == d.Traffic[best] && id < best) {
			best = id
		}
	}
	return best
}

// ToUnstructured converts a rendered object for server-side apply and
// YAML output: through its JSON form (Istio's types marshal with protobuf
// JSON), without status, creationTimestamp and empty fields the typed
// structs cannot omit.
func ToUnstructured(obj any) (*unstructured.Unstructured, error) {
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	delete(m, "status")
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	if spec, ok := m["spec"].(map[string]any); ok {
		prune(spec)
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// prune removes empty strings, maps and lists (and fields left empty by
// removing them) from the JSON form of a spec.
func prune(m map[string]any) {
	for k, v := range m {
		switch x := v.(type) {
		case string:
			if x == "" {
				delete(m, k)
			}
		case map[string]any:
			prune(x)
			if len(x) == 0 {
				delete(m, k)
			}
		case []any:
			for _, e := range x {
				if em, ok := e.(map[string]any); ok {
					prune(em)
				}
			}
			if len(x) == 0 {
				delete(m, k)
			}
		case nil:
			delete(m, k)
		}
	}
}
