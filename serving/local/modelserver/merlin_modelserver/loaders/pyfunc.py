"""The python_function flavor: a custom loader_module (with the model's code
directory on sys.path), or an mlflow.pyfunc PythonModel pickle loaded
through a small stand-in for mlflow."""

import os
import sys

from .. import mlmodel
from ..errors import LoadError, MissingPackage, import_module
from .common import Model, add_code_dir, unpickle


def install_mlflow_stand_in():
    """Registers minimal mlflow / mlflow.pyfunc / mlflow.pyfunc.model modules so
    that cloudpickled PythonModel subclasses can be unpickled without mlflow."""
    import importlib.util
    if importlib.util.find_spec("mlflow") is not None:
        return
    import types

    class PythonModel:
        """Stand-in for mlflow.pyfunc.PythonModel."""

        def load_context(self, context):
            pass

        def predict(self, context, model_input, params=None):
            raise NotImplementedError

    class PythonModelContext:
        """Stand-in for mlflow.pyfunc.PythonModelContext."""

        def __init__(self, artifacts, model_config=None):
            self._artifacts = artifacts
            self._model_config = model_config or {}

        @property
        def artifacts(self):
            return self._artifacts

        @property
        def model_config(self):
            return self._model_config

    mlflow = types.ModuleType("mlflow")
    pyfunc = types.ModuleType("mlflow.pyfunc")
    model = types.ModuleType("mlflow.pyfunc.model")
    for cls in (PythonModel, PythonModelContext):
        cls.__module__ = "mlflow.pyfunc.model"
        cls.__qualname__ = cls.__name__
        setattr(model, cls.__name__, cls)
        setattr(pyfunc, cls.__name__, cls)
    mlflow.pyfunc = pyfunc
    pyfunc.model = model
    mlflow.__version__ = "0+merlin-shim"
    sys.modules["mlflow"] = mlflow
    sys.modules["mlflow.pyfunc"] = pyfunc
    sys.modules["mlflow.pyfunc.model"] = model


def load_python_model(model_dir, pf, meta):
    add_code_dir(model_dir, pf.get("code"))
    install_mlflow_stand_in()
    import_module("cloudpickle")
    name = pf.get("python_model") or "python_model.pkl"
    pm = unpickle(os.path.join(model_dir, name), "python model")
    artifacts = {}
    for k, v in (pf.get("artifacts") or {}).items():
        p = v.get("path") if isinstance(v, dict) else v
        artifacts[k] = os.path.join(model_dir, p) if p else None
    ctx = sys.modules["mlflow.pyfunc.model"].PythonModelContext(artifacts, pf.get("model_config"))
    if hasattr(pm, "load_context"):
        try:
            pm.load_context(ctx)
        except ModuleNotFoundError as e:
            raise MissingPackage(e.name)
        except Exception as e:  # noqa: BLE001
            raise LoadError("python model load_context failed: %s: %s" % (type(e).__name__, e))
    fn = getattr(pm, "predict", None)
    if fn is None:
        raise LoadError("python model %s has no predict method" % type(pm).__name__)
    import inspect
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    except (TypeError, ValueError):
        params = [None, None]
    if len(params) >= 2:
        def predict(x):
            return fn(ctx, x)
    else:  # MLflow >= 2.20 allows predict(self, model_input)
        predict = fn
    return Model("python_function", "mlflow", predict, signature=mlmodel.signature(meta))


def load_loader_module(model_dir, pf, meta, loader):
    import importlib
    add_code_dir(model_dir, pf.get("code"))
    try:
        mod = importlib.import_module(loader)
    except ModuleNotFoundError as e:
        if e.name and loader.split(".")[0] == e.name.split(".")[0]:
            raise LoadError('loader_module "%s" not found (code dir: %s)' % (loader, pf.get("code")))
        raise MissingPackage(e.name)
    fn = getattr(mod, "_load_pyfunc", None)
    if fn is None:
        raise LoadError('loader_module "%s" has no _load_pyfunc(path) function' % loader)
    data = pf.get("data") or pf.get("model_path")
    path = os.path.join(model_dir, data) if data else model_dir
    try:
        obj = fn(path)
    except ModuleNotFoundError as e:
        raise MissingPackage(e.name)
    except Exception as e:  # noqa: BLE001
        raise LoadError("%s._load_pyfunc(%r) failed: %s: %s" % (loader, path, type(e).__name__, e))
    pred = getattr(obj, "predict", None)
    if pred is None:
        raise LoadError("%s._load_pyfunc returned a %s without predict()" % (loader, type(obj).__name__))
    return Model("python_function", "mlflow", pred, signature=mlmodel.signature(meta))
