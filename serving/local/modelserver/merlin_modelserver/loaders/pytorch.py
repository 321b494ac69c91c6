"""The pytorch flavor: a whole module saved with torch.save (or TorchScript),
run on the CPU under no_grad."""

import os

from .. import mlmodel
from ..errors import BadInput, LoadError, MissingPackage, import_module
from .common import Model, add_code_dir


def load(model_dir, fl, meta, data=None):
    import numpy as np
    add_code_dir(model_dir, fl.get("code"))
    torch = import_module("torch")
    base = os.path.join(model_dir, data or fl.get("model_data") or "data")
    path = os.path.join(base, "model.pth") if os.path.isdir(base) else base
    if not os.path.isfile(path):
        raise LoadError("pytorch model file not found: %s" % path)
    kwargs = {"map_location": "cpu"}
    import inspect
    try:
        if "weights_only" in inspect.signature(torch.load).parameters:
            kwargs["weights_only"] = False
    except (TypeError, ValueError):
        pass
    try:
        model = torch.load(path, **kwargs)
    except ModuleNotFoundError as e:
        raise MissingPackage(e.name)
    except Exception as e:  # noqa: BLE001
        hint = ""
        if "__main__" in str(e):
            hint = (" (the model's classes must be importable here: put their module in the model's code"
                    " directory, or save with cloudpickle as mlflow.pytorch does)")
        raise LoadError("cannot load pytorch model %s: %s: %s%s" % (path, type(e).__name__, e, hint))
    if not callable(model):
        raise LoadError("pytorch model %s is a %s, not a module (save it with torch.save(model))"
                        % (path, type(model).__name__))
    if hasattr(model, "eval"):
        model.eval()
    no_grad = torch.no_grad
    from_numpy = torch.from_numpy

    def to_tensor(x):
        try:
            a = np.asarray(x, dtype=np.float32)
        except (ValueError, TypeError, OverflowError) as e:
            raise BadInput("a pytorch model takes numeric tensors: %s" % e)
        return from_numpy(np.ascontiguousarray(a))

    def predict(x):
        with no_grad():
            if isinstance(x, dict):
                out = model(**{k: to_tensor(v) for k, v in x.items()})
            else:
                out = model(to_tensor(x))
        return out

    return Model("pytorch", "pytorch", predict, signature=mlmodel.signature(meta))
