"""What every flavor loader shares: the Model it returns and small helpers."""

import os
import sys

from ..errors import LoadError, MissingPackage


class Model:
    """A loaded model: a predict function plus what the protocols report about it.

    platform is the model format's name as KServe's serving runtimes know it
    (sklearn, xgboost, pytorch, mlflow): what the kubernetes target writes in
    an InferenceService's modelFormat, so V2 model metadata says the same on
    both targets. predict raises errors.BadInput for input it cannot use."""

    def __init__(self, flavor, platform, predict, tabular=False, n_features=None, signature=None):
        self.flavor = flavor
        self.platform = platform
        self.predict = predict
        self.tabular = tabular  # needs a 2-D array (sklearn, xgboost)
        self.n_features = n_features
        self.signature = signature or {}
        self.columns = [c.get("name") for c in self.signature.get("inputs", [])
                        if isinstance(c, dict) and c.get("type") != "tensor" and c.get("name")]


def n_features(model):
    """The estimator's n_features_in_ as an int, or None."""
    import numpy as np
    n = getattr(model, "n_features_in_", None)
    return int(n) if isinstance(n, (int, np.integer)) else None


def unpickle(path, what, versions=""):
    """Unpickles path, mapping failures to LoadError / MissingPackage."""
    import pickle
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        raise LoadError("%s not found: %s" % (what, path))
    except ModuleNotFoundError as e:
        raise MissingPackage(e.name)
    except Exception as e:  # noqa: BLE001 - unpickling runs arbitrary code
        raise LoadError("cannot unpickle %s %s: %s: %s%s" % (what, path, type(e).__name__, e, versions))


def add_code_dir(model_dir, code):
    """Puts the flavor's code directory (MLflow's code_paths) first on sys.path."""
    if code:
        p = os.path.join(model_dir, code)
        if not os.path.isdir(p):
            raise LoadError("code directory %s not found" % p)
        sys.path.insert(0, p)
