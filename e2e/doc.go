// Package e2e holds Merlin's end-to-end tests: the merlin binary, built
// once per run, against real git servers (git daemon, git http-backend)
// and real Python model servers, driven only through its CLI, HTTP API and
// model endpoints.
package e2e
