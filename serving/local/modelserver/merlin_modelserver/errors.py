"""Load errors, input errors, exit codes and the one-line "merlin:" log."""

import sys

EXIT_LOAD_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_RUNTIME = 3
EXIT_MISSING_PACKAGE = 4

# Debian package for an importable top-level module.
APT_PACKAGES = {
    "numpy": "python3-numpy",
    "sklearn": "python3-sklearn",
    "scipy": "python3-scipy",
    "joblib": "python3-joblib",
    "threadpoolctl": "python3-threadpoolctl",
    "xgboost": "python3-xgboost",
    "torch": "python3-torch",
    "cloudpickle": "python3-cloudpickle",
    "pandas": "python3-pandas",
    "yaml": "python3-yaml",
    "lightgbm": "python3-lightgbm",
}


class BadInput(Exception):
    """The request's input is not what the model takes: the client's error
    (HTTP 400), never the model server's (500). A canary must not be rolled
    back because a client sent it strings."""


class LoadError(Exception):
    """The model cannot be loaded (exit 1)."""


class NoRuntime(Exception):
    """The model's flavor has no local runtime (exit 3)."""

    def __init__(self, flavor, model_dir):
        super().__init__('no local runtime for flavor "%s" (model %s); serve it on the kubernetes target'
                         % (flavor, model_dir))


class MissingPackage(Exception):
    """A Python package the model needs is not installed (exit 4)."""

    def __init__(self, module):
        top = (module or "?").split(".")[0]
        apt = APT_PACKAGES.get(top)
        hint = ("apt-get install %s" % apt) if apt else ("install it (Debian: apt-get install python3-%s, if packaged)"
                                                         % top.replace("_", "-").lower())
        super().__init__('python package "%s" is missing: %s' % (top, hint))


def import_module(name):
    """Imports a module, mapping a missing package to MissingPackage."""
    import importlib
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise MissingPackage(e.name or name)


def log(msg):
    """Writes one "merlin: ..." line on stderr."""
    try:
        sys.stderr.write("merlin: %s\n" % msg)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
