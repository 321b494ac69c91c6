"""One loader module per MLflow flavor; load_model chooses the flavor.

Each flavor module has a load(model_dir, flavor_conf, meta, ...) returning a
common.Model, and is imported only when its flavor is served (so is its ML
library)."""

import os

from .. import mlmodel
from ..errors import LoadError, NoRuntime
from .common import Model  # noqa: F401 - re-exported


def load_model(model_dir):
    """Loads the MLflow model directory, choosing the flavor to serve: sklearn,
    xgboost, pytorch, then python_function (whose loader_module may name one
    of those)."""
    meta = mlmodel.read(model_dir)
    path = os.path.join(model_dir, "MLmodel")
    flavors = meta.get("flavors")
    if not isinstance(flavors, dict) or not flavors:
        raise LoadError("%s has no flavors" % path)

    def flavor(name):
        v = flavors.get(name)
        return v if isinstance(v, dict) else {}

    pf = flavor("python_function")
    if "sklearn" in flavors:
        from . import sklearn
        return sklearn.load(model_dir, flavor("sklearn"), meta, pf.get("predict_fn") or "predict")
    if "xgboost" in flavors:
        from . import xgboost
        return xgboost.load(model_dir, flavor("xgboost"), meta)
    if "pytorch" in flavors:
        from . import pytorch
        return pytorch.load(model_dir, flavor("pytorch"), meta)
    if "python_function" in flavors:
        loader = pf.get("loader_module")
        if not loader or not isinstance(loader, str):
            raise LoadError("python_function flavor in %s has no loader_module" % path)
        if loader == "mlflow.pyfunc.model":
            from . import pyfunc
            return pyfunc.load_python_model(model_dir, pf, meta)
        if loader == "mlflow.sklearn":
            from . import sklearn
            return sklearn.load(model_dir, {"pickled_model": pf.get("model_path") or pf.get("data"),
                                            "code": pf.get("code")}, meta, pf.get("predict_fn") or "predict")
        if loader == "mlflow.xgboost":
            from . import xgboost
            return xgboost.load(model_dir, {"data": pf.get("data"), "code": pf.get("code"),
                                            "model_class": "xgboost.core.Booster"}, meta)
        if loader == "mlflow.pytorch":
            from . import pytorch
            return pytorch.load(model_dir, {"code": pf.get("code")}, meta, pf.get("data"))
        if loader.startswith("mlflow."):
            others = [f for f in flavors if f != "python_function"]
            raise NoRuntime(others[0] if others else loader[len("mlflow."):], model_dir)
        from . import pyfunc
        return pyfunc.load_loader_module(model_dir, pf, meta, loader)
    raise NoRuntime(next(iter(flavors)), model_dir)
