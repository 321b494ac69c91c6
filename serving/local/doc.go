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
//
// Close (a daemon's SIGTERM) stops every server the target started, those
// still loading included: each is registered the moment it is forked, a
// start that races with Close is killed by its starter, a loading server
// exits at once on SIGTERM, and Close kills whatever its supervisors did
// not reap within the stop timeout. Only Detach and a killed daemon leave
// servers running, for the next daemon to adopt.
package local
