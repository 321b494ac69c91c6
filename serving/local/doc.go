// Package local is the embedded local target: it serves models on this
// machine with no cluster.
//
// Every version runs as its own supervised model-server process (the
// Python server embedded in package modelserver, run by Debian's
// /usr/bin/python3) on a loopback listener that Local owns, so a crashed or
// idle-stopped server restarts on the same address and requests queued in
// the listen backlog are not lost. A router (Local.ServeHTTP) in front of
// them splits each model's requests across its versions by weight, sets
// X-Merlin-Version, mirrors a share to each shadow version (several may
// run at once), samples a canary's requests to the stable version to
// compare predictions, and records per-version metrics.
//
// The router bounds what requests make it hold (admission.go): bodies over
// MaxRequestBytes are refused before they are read, bodies over 1 MiB are
// streamed to the model server as they arrive, the bodies it reads into
// memory share a byte budget, and each model has a number of requests in
// flight with a short bounded queue. Its refusals (413, 429, 503) come
// before a version is picked, so they weigh on no version's analysis.
//
// Apply is level-triggered: it records a model's desired deployment,
// starts the versions that are missing and returns. The split the router
// uses is decided by serving.Route, again whenever the deployment or a
// version's readiness changes, so traffic moves to a version only once it
// is ready, and a version is stopped only once no split needs it.
//
// Local keeps its deployments and the pids and addresses of its servers
// under StateDir: a daemon killed with -9 adopts the servers still running
// when it restarts (checked by pid, command line and health), and one
// stopped cleanly starts the same versions again with the same routed
// split and desired deployment.
package local
