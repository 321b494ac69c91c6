"""Merlin's local model server: serves one MLflow model version over HTTP.

    /usr/bin/python3 -u -B DIR/merlin_modelserver --model-dir DIR --name MODEL --version VERSION
        (--fd N | --host H --port P) [--workers N] [--orphan-timeout SECONDS]

(or ``python3 -u -B -m merlin_modelserver ...`` with the package's parent
directory on sys.path). Needs Debian's /usr/bin/python3 with python3-numpy and
python3-yaml; the ML library a flavor needs (scikit-learn, xgboost, torch,
cloudpickle) is imported only when that flavor is loaded.

Modules:

    config      command line and environment (thread defaults)
    errors      load errors, exit codes, the "merlin:" log line
    mlmodel     reading MLmodel (PyYAML's safe_load) and its signature
    loaders     one module per MLflow flavor: sklearn, xgboost, pytorch,
                pyfunc (loader_module or PythonModel pickle); the flavor is
                chosen in loaders.load_model
    protocol    KServe V1 and Open Inference Protocol V2: request decoding,
                routing, response encoding, errors
    server      HTTP/1.1 over asyncio, pre-forked workers, orphan timeout,
                graceful SIGTERM
    main        start-up: arguments, load, warm-up, serve

Flavors, in order of preference: sklearn, xgboost, pytorch, python_function
(a custom loader_module with an optional code dir, or an mlflow.pyfunc
PythonModel pickle, loaded through a small built-in stand-in for mlflow).

Protocols: KServe V1 (GET /v1/models/NAME, POST /v1/models/NAME:predict;
:explain is 501, there is no explainer) and the Open Inference Protocol V2
(/v2/health/live, /v2/health/ready, /v2/models/NAME[/versions/V][/ready|/infer]).
Every response is JSON with a Content-Length, written with a single send on a
TCP_NODELAY socket. A client's mistake (errors.BadInput: bad JSON, shape,
datatype, values a numeric model refuses, an unknown output) is a 400; only
the model's own failures are 500s, which count against a canary.

Exit codes: 0 clean stop (SIGTERM/SIGINT, or orphaned and idle for
--orphan-timeout), 1 load error, 2 bad arguments, 3 flavor without a local
runtime, 4 missing Python package. Each failure prints one line on stderr,
starting with "merlin:".

Nothing here may write bytecode: the package runs from a content-addressed
directory, and model directories are content-addressed too (python3 -B, and
sys.dont_write_bytecode is set by __main__).
"""
