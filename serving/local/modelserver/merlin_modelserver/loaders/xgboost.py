"""The xgboost flavor: a saved Booster or one of xgboost's scikit-learn
wrappers (XGBClassifier, XGBRegressor, ...), per the flavor's model_class.

The wrappers' predict() calls get_params(), which introspects __init__
signatures in scikit-learn, on every call: a single-row predict takes about
0.25 ms instead of 0.15 ms with xgboost 1.7 and scikit-learn 1.2. The model is served
as xgboost made it all the same: no scikit-learn class is patched to cache
that introspection."""

import os
import sys

from .. import mlmodel
from ..errors import LoadError, import_module
from .common import Model, add_code_dir, n_features

# Optional modules xgboost probes with an import on every predict call; when
# they are not installed, a None entry in sys.modules makes each probe fail
# fast instead of scanning sys.path (~0.5 ms per predict). Nothing is patched:
# a None entry is how Python spells "this module does not exist".
OPTIONAL_MODULES = ("cudf", "cupy", "cupyx", "dask_cudf", "datatable", "modin", "pyarrow", "dask", "pandas",
                    "scipy")


def _block_missing_optional_modules():
    import importlib.util
    for mod in OPTIONAL_MODULES:
        if mod not in sys.modules and importlib.util.find_spec(mod) is None:
            sys.modules[mod] = None


def load(model_dir, fl, meta):
    _block_missing_optional_modules()
    add_code_dir(model_dir, fl.get("code"))
    xgb = import_module("xgboost")
    data = os.path.join(model_dir, fl.get("data") or "model.xgb")
    if not os.path.isfile(data):
        raise LoadError("xgboost model file not found: %s" % data)
    cls_name = fl.get("model_class") or "xgboost.core.Booster"
    mod_name, _, attr = cls_name.rpartition(".")
    if not mod_name.startswith("xgboost"):
        raise LoadError('unsupported xgboost model_class "%s"' % cls_name)
    klass = getattr(import_module(mod_name), attr, None)
    if klass is None:
        raise LoadError('xgboost %s has no model_class "%s"' % (xgb.__version__, cls_name))
    sig = mlmodel.signature(meta)
    try:
        if isinstance(klass, type) and issubclass(klass, xgb.Booster):
            booster = klass()
            booster.load_model(data)
            dmatrix = xgb.DMatrix

            def predict(x):
                return booster.predict(dmatrix(x))
            return Model("xgboost", "xgboost", predict, tabular=True, n_features=booster.num_features(),
                         signature=sig)
        model = klass()
        model.load_model(data)
    except Exception as e:  # noqa: BLE001
        raise LoadError("cannot load xgboost model %s: %s: %s" % (data, type(e).__name__, e))
    return Model("xgboost", "xgboost", model.predict, tabular=True, n_features=n_features(model),
                 signature=sig)
