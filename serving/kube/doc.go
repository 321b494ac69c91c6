// Package kube is the kubernetes target: it serves each version of a model
// as a KServe InferenceService (serving.kserve.io/v1beta1) named after the
// version, <model>-<digest8>, and routes the model's requests with one
// Istio VirtualService (networking.istio.io/v1) named after the model,
// split by weight across the versions, with one mirror per shadow.
//
// # Use
//
//	t, err := kube.New(restConfig, kube.Options{
//		Namespace: "models",
//		Gateway:   "istio-system/ingressgateway", // "" = mesh only
//		Host:      "models.example.com",
//		Registry:  "registry.example.com/models", // modelcar images of source.path models
//	})
//	defer t.Close() // stops the convergence loop
//
// The cluster is the source of truth: Status reads it, so a restarted
// daemon sees what its predecessor deployed, weights and mirrors included.
// The process keeps only the desired deployments it applied, for its
// convergence loop and for the model conditions (a restarted target
// judges a model by what its VirtualService routes until the reconciler
// applies it again). NewStateStore keeps the reconciler's rollout state in
// a ConfigMap (merlin-state-<repo>) for the same reason.
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
// responses) and is ignored here. Each of Deployment.Mirrors (a shadow
// rollout's candidate, pull-request previews) is one entry of the route's
// mirrors list (Istio ≥ 1.22) with its own percentage; Istio discards the
// mirrored responses and does not compare them, so the target is not a
// serving.Comparer.
//
// # Applying
//
// The target follows the serving contract: Apply is level-triggered and
// never waits for readiness. It renders and validates the deployment,
// grows the model's inventory (the ConfigMap merlin-inventory-<model>),
// server-side applies the InferenceServices of every listed version with
// fluxcd/pkg/ssa (field manager "merlin", forced ownership, so hand edits
// of fields merlin sets are reverted),
// then routes: serving.Route decides the split from the one the
// VirtualService routes now and the versions whose InferenceService
// KServe reports Ready, so traffic never moves to a version that is not
// ready, and the VirtualService is applied with that split. A mirror is
// added once its version is ready (before, its predictor may not have a
// Service yet) and then stays while the deployment lists it. Finally
// Apply prunes the model's InferenceServices that the routing no longer
// keeps (neither listed nor still routed), but only those in the
// inventory that also carry merlin's labels, and returns.
//
// Readiness arrives later, so New starts a convergence loop (stopped by
// Close): every PollInterval (default 2s) it reads the InferenceServices
// of each model applied by this process and what its VirtualService
// routes, routes again and applies the VirtualService when that differs
// (a version became ready; the VirtualService was edited or deleted by
// hand), then prunes what is no longer kept. It signals Changes
// (serving.Notifier) when a version's state changed or traffic moved, so
// the reconciler acts at once.
//
// Status maps KServe's status to version states and conditions (see
// readiness): Ready=True is ready; Ready=False is still starting (KServe
// reports it while pods are scheduled, pulled and loaded) unless KServe
// says the workload gave up (a failed Knative revision, a Deployment past
// its progress deadline, a model that failed to load, an invalid spec or
// no runtime), which is failed: Degraded and no longer Progressing, so the
// reconciler rolls the version back. API errors name the object
// (Kind/namespace/name) and, for invalid objects, the field, as the API
// server reports them; RBAC denials say so.
package kube
