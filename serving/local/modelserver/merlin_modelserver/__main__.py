"""Entry point: python3 -u -B DIR/merlin_modelserver ARGS (the Go launcher's
form), python3 -u -B DIR/merlin_modelserver/__main__.py ARGS, or
python3 -u -B -m merlin_modelserver ARGS with DIR on sys.path."""

import os
import sys

# The package directory and model directories are content-addressed: nothing
# imported from them may write __pycache__ there.
sys.dont_write_bytecode = True

if not __package__:
    # Run as a directory or a file: Python put the package directory itself
    # first on sys.path, which would make its modules (config, server, ...)
    # importable as top-level names and shadow a model's own. Import the
    # package from its parent instead.
    _here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and sys.path[0] and os.path.abspath(sys.path[0]) == _here:
        sys.path[0] = os.path.dirname(_here)
    else:
        sys.path.insert(0, os.path.dirname(_here))
    del _here

from merlin_modelserver.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
