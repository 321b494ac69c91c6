#!/usr/bin/python3
"""Train the iris-sklearn example and write it as an MLflow model directory.

    /usr/bin/python3 train.py                     # writes ./model (next to this file)
    /usr/bin/python3 train.py --out DIR --seed 7  # a retrained, different model

Needs only Debian's python3-sklearn, python3-numpy and python3-cloudpickle.
MLflow is not required (and not installed on Merlin machines): the MLmodel
file is written by hand in MLflow 2.x's format. The output is deterministic:
the same seed and library versions give byte-identical files (model_uuid is
derived from the model bytes, utc_time_created is fixed or SOURCE_DATE_EPOCH),
so Merlin, which content-addresses model directories, does not see a "new"
model after a re-run.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import sys

import cloudpickle
import numpy as np
import sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_FILE = "model.pkl"
# The MLflow release whose MLmodel layout this file follows.
MLFLOW_FORMAT_VERSION = "2.12.2"
DEFAULT_CREATED = "2025-01-01 00:00:00.000000"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(HERE, "model"), help="model directory to write (default: ./model)")
    p.add_argument("--seed", type=int, default=42, help="train/test split seed (default 42)")
    p.add_argument("--c", type=float, default=1.0, help="inverse regularisation strength C (default 1.0)")
    args = p.parse_args()

    X, y = load_iris(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, random_state=args.seed, stratify=y)
    model = LogisticRegression(C=args.c, max_iter=200, random_state=args.seed)
    model.fit(X_train, y_train)
    accuracy = float(model.score(X_test, y_test))

    os.makedirs(args.out, exist_ok=True)
    data = cloudpickle.dumps(model)
    write(args.out, MODEL_FILE, data)

    py = platform.python_version()
    mlmodel = {
        "artifact_path": "model",
        "flavors": {
            "python_function": {
                "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                "loader_module": "mlflow.sklearn",
                "model_path": MODEL_FILE,
                "predict_fn": "predict",
                "python_version": py,
            },
            "sklearn": {
                "code": None,
                "pickled_model": MODEL_FILE,
                "serialization_format": "cloudpickle",
                "sklearn_version": sklearn.__version__,
            },
        },
        "mlflow_version": MLFLOW_FORMAT_VERSION,
        "model_size_bytes": len(data),
        "model_uuid": hashlib.sha256(data).hexdigest()[:32],
        "signature": {
            "inputs": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}]),
            "outputs": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]),
            "params": None,
        },
        "saved_input_example_info": {"artifact_path": "input_example.json", "type": "ndarray", "format": "tf-serving"},
        "utc_time_created": created(),
    }
    header = "# Written by examples/iris-sklearn/train.py (MLflow %s layout, without mlflow).\n" % MLFLOW_FORMAT_VERSION
    # MLflow's input example: `merlin up` shows it as a ready-to-paste curl.
    write(args.out, "input_example.json", b'{"inputs": [[5.1, 3.5, 1.4, 0.2]]}\n')
    write(args.out, "MLmodel", (header + dump_yaml(mlmodel)).encode())
    reqs = ["cloudpickle==%s" % cloudpickle.__version__, "numpy==%s" % np.__version__,
            "scikit-learn==%s" % sklearn.__version__]
    write(args.out, "requirements.txt", ("\n".join(reqs) + "\n").encode())
    write(args.out, "python_env.yaml", dump_yaml({
        "build_dependencies": ["pip"], "dependencies": ["-r requirements.txt"], "python": py}).encode())
    write(args.out, "conda.yaml", dump_yaml({
        "channels": ["conda-forge"], "dependencies": ["python=%s" % py, "pip", {"pip": reqs}],
        "name": "mlflow-env"}).encode())

    print("wrote %s: LogisticRegression(C=%g), seed %d, held-out accuracy %.3f, sha256(model.pkl)=%s"
          % (args.out, args.c, args.seed, accuracy, hashlib.sha256(data).hexdigest()[:12]))


def created():
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return DEFAULT_CREATED
    t = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def write(dir, name, data):
    """Writes data to dir/name atomically, leaving an identical file untouched."""
    path = os.path.join(dir, name)
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return
    except FileNotFoundError:
        pass
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


_PLAIN = re.compile(r"^[A-Za-z_./][A-Za-z0-9_./=-]*$|^[0-9]+\.[0-9]+\.[0-9]+$")
_RESERVED = {"null", "true", "false", "yes", "no", "on", "off", "y", "n", "~"}


def _scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    if _PLAIN.match(s) and s.lower() not in _RESERVED:
        return s
    return "'" + s.replace("'", "''") + "'"


def dump_yaml(v, indent=0):
    """A tiny block-style YAML emitter (sorted keys, like MLflow's yaml.safe_dump)."""
    pad = " " * indent
    out = []
    if isinstance(v, dict):
        for k in sorted(v):
            x = v[k]
            if isinstance(x, (dict, list)) and x:
                out.append("%s%s:\n%s" % (pad, k, dump_yaml(x, indent + 2 if isinstance(x, dict) else indent)))
            else:
                out.append("%s%s: %s\n" % (pad, k, _scalar(x) if not isinstance(x, (dict, list)) else ("{}" if isinstance(x, dict) else "[]")))
    else:
        for x in v:
            if isinstance(x, dict):
                body = dump_yaml(x, indent + 2)
                out.append("%s- %s" % (pad, body[indent + 2:]))
            elif isinstance(x, list):
                out.append("%s-\n%s" % (pad, dump_yaml(x, indent + 2)))
            else:
                out.append("%s- %s\n" % (pad, _scalar(x)))
    return "".join(out)


if __name__ == "__main__":
    sys.exit(main())
