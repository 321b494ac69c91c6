// Package modelserver embeds and launches Merlin's local Python model server.
//
// The server is a small Python package, merlin_modelserver (embedded as
// [Source]), that serves one MLflow model version per process with the
// KServe V1 and Open Inference Protocol V2 HTTP APIs. Its modules: config
// (command line, thread defaults), mlmodel (MLmodel read with PyYAML's
// safe_load), loaders (one module per flavor: sklearn, xgboost, pytorch,
// pyfunc), protocol (V1/V2 request decoding, routing, response encoding),
// server (HTTP over asyncio, workers, orphan timeout, graceful stop) and main.
// It needs only Debian's /usr/bin/python3 with python3-numpy and python3-yaml,
// plus the library of the model's flavor (python3-sklearn, python3-xgboost,
// python3-torch, python3-cloudpickle), imported lazily.
//
// Its status codes say whose fault a failure is, since the router counts
// 5xx against a version in a canary's analysis: the client's mistakes are
// 4xx (malformed JSON, a wrong shape or datatype, strings or NaN that a
// numeric model refuses, an unknown requested output; :explain is 501, there
// is no explainer), and only the model's own failures on well-formed input
// are 500. V2 model metadata reports platform as KServe's model-format name
// (sklearn, xgboost, pytorch, mlflow) and always has inputs and outputs
// (empty lists for a model without a signature).
//
// Typical use by the local target:
//
//	py, err := modelserver.Python()          // /usr/bin/python3 with numpy and yaml
//	pkg, err := modelserver.Install(stateDir) // stateDir/modelserver-<hash>/merlin_modelserver
//	ln, err := net.Listen("tcp", "127.0.0.1:0")
//	f, err := ln.(*net.TCPListener).File()   // a dup: close ln and f after Start
//	cmd := modelserver.Command(pkg, modelserver.Options{Python: py, ModelDir: dir,
//		Name: "iris", Version: "v3", Workers: 2}, f)
//	cmd.Stdout, cmd.Stderr = logFile, logFile
//	err = cmd.Start()
//
// [Install] writes the package to a content-addressed directory (atomically:
// a synced temporary directory renamed into place), so servers started from
// an older binary keep their files. [Command] runs "python3 -u -B PKG ...":
// Python executes the package directory's __main__.py, which imports the
// package from its parent directory; -B (and sys.dont_write_bytecode) keep
// __pycache__ out of the package and model directories. The same server
// runs by hand as "python3 -B -m merlin_modelserver ..." with the package's
// parent directory on PYTHONPATH.
//
// The process inherits the listening socket as fd 3, so connections made
// while the model is loading wait in the backlog instead of being refused;
// poll GET /v2/health/ready until it answers 200. It runs in its own process
// group and survives the daemon's death: a restarted daemon can adopt it,
// and an orphan that receives no request for Options.OrphanTimeout exits on
// its own. SIGTERM stops it gracefully (in-flight requests finish, bounded by
// 10 s) with exit code 0. Load failures exit with code 1, [ExitNoRuntime] or
// [ExitMissingPackage], after one line on stderr starting with "merlin:".
//
// One OpenMP/BLAS thread per worker is the default (OMP_NUM_THREADS=1 unless
// set in the environment): single-row predictions are fastest that way and
// scale with Workers instead.
package modelserver
