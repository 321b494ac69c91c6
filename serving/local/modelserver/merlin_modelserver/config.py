"""Configuration: the command line and the environment."""

import argparse
import os
import sys

from .errors import EXIT_USAGE

# One BLAS/OpenMP thread per worker unless the environment says otherwise:
# online predicts are small, and idle OpenMP threads spinning on 2 cores cost
# milliseconds.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write("merlin: bad arguments: %s\n" % message)
        sys.exit(EXIT_USAGE)


def parse_args(argv):
    """Parses the command line; bad arguments exit with code 2 after one
    "merlin:" line. --workers 0 becomes one worker per CPU."""
    p = _Parser(prog="merlin_modelserver", description="Merlin local model server")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--bundle", help="the directory --model-dir names when that is an inherited "
                   "descriptor's /proc/self/fd path (informational: ps shows what is served)")
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--fd", type=int, help="inherited listening socket")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, default=1, help="worker processes (0: one per CPU)")
    p.add_argument("--orphan-timeout", type=float, default=300.0,
                   help="exit when orphaned and idle this long (seconds, 0: never)")
    a = p.parse_args(argv)
    if (a.fd is None) == (a.port is None):
        p.error("give exactly one of --fd or --port")
    if a.workers < 0:
        p.error("--workers must be >= 0")
    if a.workers == 0:
        a.workers = os.cpu_count() or 1
    return a


def set_thread_defaults(environ=None):
    """Sets OMP/OpenBLAS/MKL threads to 1 where the environment does not
    choose; must run before numpy (and its BLAS) is imported."""
    environ = os.environ if environ is None else environ
    for var in THREAD_VARIABLES:
        environ.setdefault(var, "1")
