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
// The router speaks KServe V1 and the Open Inference Protocol (protocol.go).
// It answers the server-level endpoints itself: /v2/health/live,
// /v2/health/ready (400, ready false, while a deployed model has no version
// that can serve), /v2 (server metadata) and /v1/models (the model list).
// A path that names a version, /v2/models/NAME/versions/VERSION/..., goes
// to that version when it takes traffic (VERSION is Merlin's version id),
// and is a 404 otherwise; model metadata lists those versions whichever
// one answers. X-Merlin-Version is set on every answer a version was
// chosen for and on no other: not on server-level endpoints, an unknown
// model or version, or a model with no version taking traffic. A client's
// mistake is the model server's 4xx, never a 5xx that would count against
// a canary.
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
// A model is code, so a model server gets little of the daemon's
// (sandbox.go): an allow-listed environment (the manifest's env, the
// runtime's variables, a scratch HOME and TMPDIR of its own, never the
// daemon's secrets); under a root daemon another user (Options.RunAsUser,
// nobody by default) without supplementary groups; and its bundle and the
// server package as inherited directory descriptors, so it needs no path
// into the state directory, which may stay private to the daemon. Its log
// and listening socket are descriptors the daemon opened.
//
// Local keeps its deployments and the pids and addresses of its servers
// under StateDir: a daemon killed with -9 adopts the servers still running
// when it restarts (checked by pid, command line and health), and one
// stopped cleanly starts the same versions again with the same routed
// split and desired deployment.
//
// Close (a daemon's SIGTERM) stops every server the target started, those
// still loading included: each is registered the moment it is forked, a
// start that races with Close is killed by its starter, a loading server
// exits at once on SIGTERM, and Close kills whatever its supervisors did
// not reap within the stop timeout. Only Detach and a killed daemon leave
// servers running, for the next daemon to adopt.
package local
