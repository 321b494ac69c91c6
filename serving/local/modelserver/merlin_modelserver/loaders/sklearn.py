"""The sklearn flavor: a pickled (or cloudpickled) scikit-learn estimator.

Estimators are used as unpickled: no scikit-learn class is patched. A pickle
from another scikit-learn version loads or fails as scikit-learn decides; a
failure names both versions."""

import os

from .. import mlmodel
from ..errors import LoadError, import_module
from .common import Model, add_code_dir, n_features, unpickle


def load(model_dir, fl, meta, predict_fn="predict"):
    fmt = fl.get("serialization_format") or "cloudpickle"
    if fmt not in ("pickle", "cloudpickle"):
        raise LoadError('unsupported sklearn serialization_format "%s" (want pickle or cloudpickle)' % fmt)
    add_code_dir(model_dir, fl.get("code"))
    sklearn = import_module("sklearn")
    if fmt == "cloudpickle":
        import_module("cloudpickle")
    name = fl.get("pickled_model") or fl.get("model_path") or "model.pkl"
    saved = fl.get("sklearn_version")
    hint = ""
    if saved and str(saved) != sklearn.__version__:
        hint = " (saved with scikit-learn %s, this machine has %s)" % (saved, sklearn.__version__)
    model = unpickle(os.path.join(model_dir, name), "sklearn model", hint)
    fn = getattr(model, predict_fn or "predict", None)
    if fn is None:
        raise LoadError("sklearn model %s has no %s() method" % (type(model).__name__, predict_fn))
    return Model("sklearn", "sklearn", fn, tabular=True, n_features=n_features(model),
                 signature=mlmodel.signature(meta))
