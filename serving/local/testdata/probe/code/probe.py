"""A model that reports what its server may see and do, for Merlin's sandbox
tests (serving/local/sandbox_test.go, daemon/sandbox_test.go). Like a
committed pickle's code, it runs when the model is loaded: it reads the
environment and tries to write into every path listed in PROBE_WRITE
(os.pathsep-separated directories and files), into its own bundle and into
its HOME. Every prediction answers the report."""

import os

MARK = "written-by-model"


def _write(path):
    """Creates a file in a directory, or opens a file for appending; says
    "written" or the exception's name."""
    try:
        if os.path.isdir(path):
            with open(os.path.join(path, MARK), "x") as f:
                f.write("a model was here\n")
        else:
            with open(path, "a"):
                pass
        return "written"
    except OSError as e:
        return type(e).__name__


class Probe:
    def __init__(self, path):
        targets = [t for t in os.environ.get("PROBE_WRITE", "").split(os.pathsep) if t]
        targets += [path, os.path.join(path, "MLmodel")]  # its own bundle
        self.report = {
            "uid": os.getuid(),
            "gid": os.getgid(),
            "groups": os.getgroups(),
            "env": dict(os.environ),
            "bundle": path,
            "writes": {t: _write(t) for t in targets},
            "home": _write(os.environ.get("HOME", "/nonexistent")),
        }

    def predict(self, x):
        return self.report


def _load_pyfunc(path):
    return Probe(path)
