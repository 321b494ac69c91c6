"""Start-up: arguments, the model, warm-up, then serving."""

import json
import os
import signal
import sys
import time

from . import config
from .errors import (EXIT_LOAD_ERROR, EXIT_MISSING_PACKAGE, EXIT_NO_RUNTIME, LoadError, MissingPackage, NoRuntime,
                     log)


def example_row(model_dir, model):
    """One input row for warming the model up: the first row of MLflow's saved
    input example, else zeros as wide as the model's features, else None."""
    try:
        with open(os.path.join(model_dir, "input_example.json"), "rb") as f:
            doc = json.loads(f.read())
        for key in ("inputs", "instances", "data"):
            rows = doc.get(key) if isinstance(doc, dict) else None
            if isinstance(rows, list) and rows and isinstance(rows[0], list):
                return rows[0]
    except (OSError, ValueError):
        pass
    from .protocol import sig_tensors
    n = model.n_features
    if not n:
        for t in sig_tensors(model.signature.get("inputs"), "input") or []:
            shape = t.get("shape") if isinstance(t, dict) else None
            if isinstance(shape, list) and len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 0:
                n = shape[1]
            break
    return [0.0] * n if n else None


WARM_UP_PREDICTIONS = 3


def warm_up(app, model_dir):
    """Runs a few predictions before the server reports ready, so that lazy
    imports and first-call costs inside the ML library are not paid by the
    first clients (a canary judged on its latency would look slow). Failures
    are ignored: whether the model answers well is for the requests to show."""
    try:
        row = example_row(model_dir, app.model)
    except Exception:  # noqa: BLE001
        return
    if row is None:
        return
    from .protocol import dumps
    body = dumps({"instances": [row]})
    for _ in range(WARM_UP_PREDICTIONS):
        try:
            app.v1_predict(body)
        except Exception:  # noqa: BLE001
            return


def _skip_setuptools_distutils():
    """Debian's setuptools hooks `import distutils` (which joblib, and so every
    scikit-learn import, does) to load setuptools and pkg_resources: ~0.5 s of
    startup for nothing. The standard library's distutils is enough here."""
    hack = sys.modules.get("_distutils_hack")
    if hack is not None and "distutils" not in sys.modules:
        try:
            hack.remove_shim()
        except Exception:  # noqa: BLE001 - an unknown setuptools: keep its hook
            pass


def main(argv=None):
    start = time.monotonic()
    ppid = os.getppid()  # before loading: the parent may die while the model loads

    def exit_now(signum, frame):
        # SIGTERM/SIGINT before serving: nothing to finish, so exit at once.
        # Not by SystemExit: a model's loading code may catch it and go on,
        # and unwinding and finalizing numpy, scipy and sklearn costs 0.1-0.3 s
        # of CPU; a daemon stopped during a burst of starts stops every
        # loading server at once, and on a loaded machine that took longer
        # than its stop timeout.
        os._exit(0)
    signal.signal(signal.SIGTERM, exit_now)
    signal.signal(signal.SIGINT, exit_now)
    a = config.parse_args(sys.argv[1:] if argv is None else argv)
    config.set_thread_defaults()
    _skip_setuptools_distutils()
    code = 0
    try:
        try:
            import numpy  # noqa: F401 - first, so that a missing numpy exits with code 4
        except ModuleNotFoundError as e:
            raise MissingPackage(e.name)
        from .loaders import load_model
        from .protocol import App
        from .server import Server, listening_socket, supervise
        sock = listening_socket(a)
        model = load_model(os.path.abspath(a.model_dir))
    except NoRuntime as e:
        log(str(e))
        return EXIT_NO_RUNTIME
    except MissingPackage as e:
        log(str(e))
        return EXIT_MISSING_PACKAGE
    except LoadError as e:
        log(str(e))
        return EXIT_LOAD_ERROR
    except Exception as e:  # noqa: BLE001
        log("cannot load model %s: %s: %s" % (a.model_dir, type(e).__name__, str(e).replace("\n", " ")))
        return EXIT_LOAD_ERROR
    app = App(model, a.name, a.version)
    warm_up(app, os.path.abspath(a.model_dir))
    if a.workers <= 1:
        import gc
        gc.collect()
        gc.freeze()  # the loaded model is long-lived: keep it out of every full collection
    addr = sock.getsockname()
    sys.stdout.write("merlin: model %s version %s ready: flavor %s, %s:%d, %d worker(s), pid %d, %.0f ms\n"
                     % (a.name, a.version, model.flavor, addr[0], addr[1], a.workers, os.getpid(),
                        (time.monotonic() - start) * 1000))
    sys.stdout.flush()
    if a.workers > 1:
        code = supervise(sock, app, a.workers, a.orphan_timeout, ppid)
    else:
        Server(sock, app, orphan_ppid=ppid, orphan_timeout=a.orphan_timeout).run()
    return code
