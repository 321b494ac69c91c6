// Package config is the in-cluster install of Merlin: kustomize bases
// (default/, rbac/, manager/; see README.md), no Go code. Its test builds
// config/default with kustomize and applies the result to a real
// kube-apiserver: every object must be accepted (server-side dry run), the
// ServiceAccount must be allowed exactly what the daemon does (and the
// kubernetes target and leader election must work as that account), and
// the shipped merlin.config.yaml must be a valid daemon configuration.
package config
