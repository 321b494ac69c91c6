// Package kube is the kubernetes target: it serves each version of a model
// as a KServe InferenceService (serving.kserve.io/v1beta1) named after the
// version, <model>-<digest8>, and routes the model's requests with one
// Istio VirtualService (networking.istio.io/v1) named after the model,
// split by weight across the versions, with a mirror for a shadow.
//
// # Use
//
//	t, err := kube.New(restConfig, kube.Options{
//		Namespace: "models",
//		Gateway:   "istio-system/ingressgateway", // "" = mesh only
//		Host:      "models.example.com",
//		Registry:  "registry.example.com/models", // modelcar images of source.path models
//		ReadyTimeout: 5 * time.Minute,
//	})
//
// The target keeps no state in the process: Status reads the cluster, so a
// restarted daemon sees what its predecessor deployed. NewStateStore keeps
// the reconciler's rollout state in a ConfigMap (merlin-state-<repo>) for
// the same reason.
//
// # Rendering
//
// Render is pure (deployment + Config → typed objects); ToUnstructured and
// WriteYAML turn them into what is applied and what `merlin render
// --target kubernetes` prints. Golden files in testdata/golden pin the
// output; a test creates each golden object on a real API server with the
// real KServe and Istio CRDs, so the schemas accept them.
//
// The predictor is model.modelFormat + storageUri, pinned to the KServe
// ClusterServingRuntime of the model type (DefaultRuntimes), or, for type
// custom and for versions that carry an image but no storage URI, a
// container running that image. Versions of source.path models have
// neither a URI of their own: with Config.Registry set they are served from
// the modelcar image oci://<registry>/<model>:<digest> (see ModelcarURI);
// without it rendering fails with an error that says so.
//
// # Model names on the wire
//
// KServe's runtimes serve a model under its InferenceService name unless
// told otherwise, which here would be <model>-<digest8>: different for
// every version. Istio rewrites URIs per HTTP route, not per weighted
// destination, so a weighted split across versions cannot rewrite the name
// per version. Merlin therefore makes every predictor serve the model under
// the model's own name, which is also what clients call
// (/v1/models/<model>:predict, /v2/models/<model>/infer), and the route
// needs no rewrite: the runtimes that read the name from --model_name
// (KServe's sklearn and xgboost servers, TF Serving) get that argument
// (KServe appends predictor args to the runtime's, and the last one wins),
// MLServer (pyfunc, protocol v2 only) gets MLSERVER_MODEL_NAME. TorchServe
// and Triton (pytorch, onnx) take the name from the model repository, which
// must therefore name the model as the manifest does; custom images must
// serve the manifest's model name. KServe itself reads the same settings
// back (utils.GetModelName) for the URLs in InferenceService status.
//
// The route matches /v1/models/<model> and /v1/models/<model>:*, and
// /v2/models/<model> and /v2/models/<model>/*, exactly: a plain prefix
// would also catch a model whose name starts with <model>. Every
// destination sets the X-Merlin-Version response header, as the local
// router does. Deployment.Compare has no Istio equivalent (it needs both
// responses) and is ignored here; shadows use Istio's mirror.
//
// # Applying
//
// Apply uses fluxcd/pkg/ssa (server-side apply, field manager "merlin",
// forced ownership, so hand edits of fields merlin sets — the weights — are
// reverted on the next Apply) in stages: the InferenceServices; then, once
// every listed version's InferenceService reports Ready=True for its
// current generation, the VirtualService; then pruning. If a version is
// not Ready within ReadyTimeout, Apply returns an error wrapping
// serving.ErrNotReady and the VirtualService, hence the traffic split, is
// left as it was. Pruning deletes the model's InferenceServices that are no
// longer listed, but only those in the model's inventory (the ConfigMap
// merlin-inventory-<model>, grown before anything is created) that also
// carry merlin's labels. API errors name the object (Kind/namespace/name)
// and, for invalid objects, the field, as the API server reports them;
// RBAC denials say so.
package kube
