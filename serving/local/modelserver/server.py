#!/usr/bin/python3
"""Merlin's local model server: serves one MLflow model version over HTTP.

    /usr/bin/python3 -u server.py --model-dir DIR --name MODEL --version VERSION
        (--fd N | --host H --port P) [--workers N] [--orphan-timeout SECONDS]

Standard library + numpy; the ML library a flavor needs (scikit-learn,
xgboost, torch, cloudpickle) is imported only when that flavor is loaded.

Flavors, in order of preference: sklearn, xgboost, pytorch, python_function
(a custom loader_module with an optional code dir, or an mlflow.pyfunc
PythonModel pickle, loaded through a small built-in stand-in for mlflow).

Protocols: KServe V1 (GET /v1/models/NAME, POST /v1/models/NAME:predict) and
the Open Inference Protocol V2 (/v2/health/live, /v2/health/ready,
/v2/models/NAME[/versions/V][/ready|/infer]). Every response is JSON with a
Content-Length, written with a single send on a TCP_NODELAY socket.

Exit codes: 0 clean stop (SIGTERM/SIGINT, or orphaned and idle for
--orphan-timeout), 1 load error, 2 bad arguments, 3 flavor without a local
runtime, 4 missing Python package. Each failure prints one line on stderr,
starting with "merlin:".
"""

import os
import sys

# Model directories are content-addressed: importing a model's code must not
# write __pycache__ into them.
sys.dont_write_bytecode = True

import asyncio  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402

EXIT_LOAD_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_RUNTIME = 3
EXIT_MISSING_PACKAGE = 4

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
IDLE_CONNECTION_TIMEOUT = 120.0  # longer than Go's default IdleConnTimeout (90 s)
SHUTDOWN_GRACE = 10.0

# Debian package for an importable top-level module.
APT_PACKAGES = {
    "numpy": "python3-numpy",
    "sklearn": "python3-sklearn",
    "scipy": "python3-scipy",
    "joblib": "python3-joblib",
    "threadpoolctl": "python3-threadpoolctl",
    "xgboost": "python3-xgboost",
    "torch": "python3-torch",
    "cloudpickle": "python3-cloudpickle",
    "pandas": "python3-pandas",
    "yaml": "python3-yaml",
    "lightgbm": "python3-lightgbm",
}

np = None  # numpy, imported in main() so that a missing numpy exits with code 4


class LoadError(Exception):
    """The model cannot be loaded (exit 1)."""


class NoRuntime(Exception):
    """The model's flavor has no local runtime (exit 3)."""

    def __init__(self, flavor, model_dir):
        super().__init__('no local runtime for flavor "%s" (model %s); serve it on the kubernetes target'
                         % (flavor, model_dir))


class MissingPackage(Exception):
    """A Python package the model needs is not installed (exit 4)."""

    def __init__(self, module):
        top = (module or "?").split(".")[0]
        apt = APT_PACKAGES.get(top)
        hint = ("apt-get install %s" % apt) if apt else ("install it (Debian: apt-get install python3-%s, if packaged)"
                                                         % top.replace("_", "-").lower())
        super().__init__('python package "%s" is missing: %s' % (top, hint))


class BadRequest(Exception):
    """The request is malformed (HTTP 400)."""


# --------------------------------------------------------------------------
# MLmodel (YAML) parsing: the block-style subset MLflow writes. PyYAML is used
# as a fallback for anything this parser refuses.

class _YAMLError(Exception):
    pass


_INT_RE = re.compile(r"^[-+]?(0|[1-9][0-9_]*)$")
# YAML 1.1 floats as PyYAML resolves them (1e3 stays a string).
_FLOAT_RE = re.compile(r"^[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?$|^[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?$")
_NULLS = ("", "~", "null", "Null", "NULL")
_TRUES = ("true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON")
_FALSES = ("false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF")


def _resolve(s):
    if s in _NULLS:
        return None
    if s in _TRUES:
        return True
    if s in _FALSES:
        return False
    if _INT_RE.match(s):
        return int(s.replace("_", ""))
    if _FLOAT_RE.match(s):
        return float(s.replace("_", ""))
    low = s.lower()
    if low in (".inf", "+.inf"):
        return float("inf")
    if low == "-.inf":
        return float("-inf")
    if low == ".nan":
        return float("nan")
    return s


def _strip_comment(s):
    """Removes a trailing ' #...' comment from a plain (unquoted) line part."""
    i = s.find(" #")
    if s.startswith("#"):
        return ""
    return (s[:i] if i >= 0 else s).rstrip()


class _MiniYAML:
    def __init__(self, text):
        self.lines = text.replace("\r\n", "\n").replace("\t", "    ").split("\n")
        self.i = 0

    # -- helpers
    @staticmethod
    def _indent(line):
        return len(line) - len(line.lstrip(" "))

    def _skip(self):
        while self.i < len(self.lines):
            s = self.lines[self.i].strip()
            if s == "" or s.startswith("#") or (s in ("---", "...") and self._indent(self.lines[self.i]) == 0):
                self.i += 1
                continue
            return True
        return False

    def parse(self):
        if not self._skip():
            return None
        node = self._node(-1)
        if self._skip():
            raise _YAMLError("unexpected content at line %d" % (self.i + 1))
        return node

    def _node(self, parent):
        if not self._skip():
            return None
        line = self.lines[self.i]
        ind = self._indent(line)
        if ind <= parent:
            return None
        s = line[ind:]
        if s == "-" or s.startswith("- "):
            return self._seq(ind)
        if self._split_key(s) is not None:
            return self._map(ind)
        self.i += 1
        return self._value(s, parent)

    def _split_key(self, s):
        """Returns (key, rest) when s is 'key: rest' / 'key:', else None."""
        if s[:1] in ("'", '"'):
            q = s[0]
            j = 1
            while True:
                j = s.find(q, j)
                if j < 0:
                    return None
                if q == "'" and s[j + 1:j + 2] == "'":
                    j += 2
                    continue
                if q == '"' and s[j - 1] == "\\":
                    j += 1
                    continue
                break
            key = self._quoted_text(s[:j + 1])
            rest = s[j + 1:]
            if rest == ":" or rest.startswith(": "):
                return key, rest[1:].strip()
            return None
        if s[:1] in ("[", "{", "&", "*", "!", "|", ">", "?", "%", "@", "`"):
            return None
        j = s.find(": ")
        if j < 0:
            if s.endswith(":"):
                j = len(s) - 1
            else:
                return None
        if " #" in s[:j]:
            return None
        return s[:j].strip(), s[j + 1:].strip()

    def _map(self, ind):
        out = {}
        while self._skip():
            line = self.lines[self.i]
            li = self._indent(line)
            if li < ind:
                break
            if li > ind:
                raise _YAMLError("bad indentation at line %d" % (self.i + 1))
            s = line[ind:]
            if s == "-" or s.startswith("- "):
                break
            kv = self._split_key(s)
            if kv is None:
                raise _YAMLError("expected 'key: value' at line %d" % (self.i + 1))
            key, rest = kv
            self.i += 1
            if _strip_comment(rest) == "":
                # Nested block, or a sequence at the same indentation as the key.
                if self._skip():
                    nl = self.lines[self.i]
                    ni = self._indent(nl)
                    ns = nl[ni:]
                    if ni == ind and (ns == "-" or ns.startswith("- ")):
                        out[key] = self._seq(ind)
                        continue
                out[key] = self._node(ind)
            else:
                out[key] = self._value(rest, ind)
        return out

    def _seq(self, ind):
        out = []
        while self._skip():
            line = self.lines[self.i]
            li = self._indent(line)
            if li != ind:
                if li > ind:
                    raise _YAMLError("bad indentation at line %d" % (self.i + 1))
                break
            s = line[ind:]
            if not (s == "-" or s.startswith("- ")):
                break
            rest = s[1:].lstrip(" ")
            if _strip_comment(rest) == "":
                self.i += 1
                out.append(self._node(ind))
                continue
            off = ind + (len(s) - len(rest))
            if rest.startswith("- ") or rest == "-" or self._split_key(rest) is not None:
                # "- key: value" / "- - x": re-read the rest as a block at its column.
                self.lines[self.i] = " " * off + rest
                out.append(self._node(ind))
            else:
                self.i += 1
                out.append(self._value(rest, ind))
        return out

    def _continuation(self, parent):
        """Collects the following lines indented deeper than parent (for multi-line scalars)."""
        out = []
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.strip() == "":
                out.append("")
                self.i += 1
                continue
            if self._indent(line) <= parent:
                break
            out.append(line.strip())
            self.i += 1
        while out and out[-1] == "":
            out.pop()
        return out

    @staticmethod
    def _fold(parts):
        """YAML line folding: single breaks become spaces, blank lines newlines."""
        res = ""
        pending_blank = 0
        for k, p in enumerate(parts):
            if p == "" and k > 0:
                pending_blank += 1
                continue
            if k > 0:
                res += "\n" * pending_blank if pending_blank else " "
            pending_blank = 0
            res += p
        return res

    def _value(self, s, parent):
        """Parses the scalar/flow value starting with s (already consumed line)."""
        if s[:1] in ("'", '"'):
            q = s[0]
            text = s
            while not self._quoted_closed(text):
                if self.i >= len(self.lines):
                    raise _YAMLError("unterminated quoted scalar")
                text += "\n" + self.lines[self.i]
                self.i += 1
            end = self._quoted_end(text)
            tail = text[end + 1:].strip()
            if tail and not tail.startswith("#"):
                raise _YAMLError("unexpected text after quoted scalar: %r" % tail[:20])
            return self._quoted_text(text[:end + 1], q)
        if s[:1] in ("[", "{"):
            text = s
            while True:
                try:
                    val, pos = _Flow(text).parse()
                    tail = text[pos:].strip()
                    if tail and not tail.startswith("#"):
                        raise _YAMLError("unexpected text after flow collection")
                    return val
                except _FlowIncomplete:
                    if self.i >= len(self.lines):
                        raise _YAMLError("unterminated flow collection")
                    text += " " + self.lines[self.i].strip()
                    self.i += 1
        if s[:1] in ("|", ">"):
            return self._block_scalar(s, parent)
        if s[:1] in ("&", "*", "!", "%", "@", "`"):
            raise _YAMLError("anchors, aliases and tags are not supported")
        first = _strip_comment(s)
        parts = [first]
        if "#" not in s[len(first):]:
            parts += [p for p in self._continuation(parent)]
        if len(parts) == 1:
            return _resolve(first)
        for p in parts[1:]:
            if p.startswith("#") or " #" in p:
                raise _YAMLError("comment inside a multi-line plain scalar")
        return self._fold(parts)

    def _block_scalar(self, s, parent):
        head = _strip_comment(s)
        style = head[0]
        chomp = "clip"
        explicit = None
        for c in head[1:]:
            if c == "-":
                chomp = "strip"
            elif c == "+":
                chomp = "keep"
            elif c.isdigit():
                explicit = int(c)
            else:
                raise _YAMLError("bad block scalar header %r" % head)
        raw = []
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.strip() and self._indent(line) <= parent:
                break
            raw.append(line)
            self.i += 1
        content_ind = None
        if explicit is not None:
            content_ind = max(parent, 0) + explicit
        else:
            for line in raw:
                if line.strip():
                    content_ind = self._indent(line)
                    break
        if content_ind is None:
            return ""
        lines = [line[content_ind:] if line.strip() else "" for line in raw]
        trailing = 0
        while lines and lines[-1] == "":
            lines.pop()
            trailing += 1
        if style == "|":
            text = "\n".join(lines)
        else:
            text = ""
            prev = None
            for line in lines:
                if prev is None:
                    text = line
                elif line == "":
                    text += "\n"
                elif prev == "":
                    text += line
                elif line.startswith(" ") or prev.startswith(" "):
                    text += "\n" + line
                else:
                    text += " " + line
                prev = line
        if not lines:
            return "" if chomp != "keep" else "\n" * trailing
        if chomp == "strip":
            return text
        if chomp == "keep":
            return text + "\n" * (1 + trailing)
        return text + "\n"

    @staticmethod
    def _quoted_end(text):
        q = text[0]
        j = 1
        while True:
            j = text.find(q, j)
            if j < 0:
                return -1
            if q == "'" and text[j + 1:j + 2] == "'":
                j += 2
                continue
            if q == '"':
                k = j - 1
                bs = 0
                while text[k] == "\\":
                    bs += 1
                    k -= 1
                if bs % 2:
                    j += 1
                    continue
            return j

    def _quoted_closed(self, text):
        return self._quoted_end(text) >= 0

    @classmethod
    def _quoted_text(cls, text, q=None):
        q = q or text[0]
        body = text[1:-1]
        lines = body.split("\n")
        if len(lines) > 1:
            parts = [lines[0].rstrip(" ")] + [ln.strip(" ") for ln in lines[1:-1]] + [lines[-1].lstrip(" ")]
            if q == '"':
                # An escaped line break joins lines without a space.
                joined = ""
                pending_blank = 0
                for k, p in enumerate(parts):
                    if k > 0 and p == "" and k < len(parts) - 1:
                        pending_blank += 1
                        continue
                    if k > 0:
                        if joined.endswith("\\") and not joined.endswith("\\\\"):
                            joined = joined[:-1]
                        elif pending_blank:
                            joined += "\\n" * pending_blank
                        else:
                            joined += " "
                    pending_blank = 0
                    joined += p
                body = joined
            else:
                body = cls._fold(parts)
        if q == "'":
            return body.replace("''", "'")
        try:
            return json.loads('"' + body.replace("\\/", "/").replace("\\x", "\\u00")
                              .replace("\\e", "\\u001b").replace("\\0", "\\u0000")
                              .replace("\\ ", " ").replace("\t", "\\t") + '"')
        except ValueError as e:
            raise _YAMLError("bad double-quoted scalar: %s" % e)


class _FlowIncomplete(Exception):
    pass


class _Flow:
    """Flow collections: [a, b], {k: v}, nested, with quoted or plain scalars."""

    def __init__(self, text):
        self.t = text
        self.p = 0

    def parse(self):
        v = self._value()
        return v, self.p

    def _ws(self):
        while self.p < len(self.t) and self.t[self.p] in " \t\n":
            self.p += 1
        if self.p >= len(self.t):
            raise _FlowIncomplete()

    def _value(self):
        self._ws()
        c = self.t[self.p]
        if c == "[":
            self.p += 1
            out = []
            while True:
                self._ws()
                if self.t[self.p] == "]":
                    self.p += 1
                    return out
                out.append(self._value())
                self._ws()
                if self.t[self.p] == ",":
                    self.p += 1
                elif self.t[self.p] != "]":
                    raise _YAMLError("expected ',' or ']' in flow sequence")
        if c == "{":
            self.p += 1
            out = {}
            while True:
                self._ws()
                if self.t[self.p] == "}":
                    self.p += 1
                    return out
                k = self._scalar()
                self._ws()
                if self.t[self.p] == ":":
                    self.p += 1
                    self._ws()
                    if self.t[self.p] in ",}":
                        v = None
                    else:
                        v = self._value()
                else:
                    v = None
                out[k] = v
                self._ws()
                if self.t[self.p] == ",":
                    self.p += 1
                elif self.t[self.p] != "}":
                    raise _YAMLError("expected ',' or '}' in flow mapping")
        return self._scalar()

    def _scalar(self):
        c = self.t[self.p]
        if c in ("'", '"'):
            end = _MiniYAML._quoted_end(self.t[self.p:])
            if end < 0:
                raise _FlowIncomplete()
            s = _MiniYAML._quoted_text(self.t[self.p:self.p + end + 1])
            self.p += end + 1
            return s
        start = self.p
        while self.p < len(self.t):
            ch = self.t[self.p]
            if ch in ",]}":
                break
            if ch == ":" and (self.p + 1 >= len(self.t) or self.t[self.p + 1] in " ,]}"):
                break
            if ch == "#" and self.t[self.p - 1] == " ":
                raise _YAMLError("comment inside a flow collection")
            self.p += 1
        if self.p >= len(self.t):
            raise _FlowIncomplete()
        return _resolve(self.t[start:self.p].strip())


def parse_mlmodel(text):
    """Parses an MLmodel file (YAML) into a dict."""
    try:
        doc = _MiniYAML(text).parse()
    except Exception as e:  # noqa: BLE001 - anything this parser does not handle
        try:
            import yaml
        except ImportError:
            raise LoadError("cannot parse MLmodel (%s); python3-yaml is not installed to try harder" % e)
        try:
            doc = yaml.safe_load(text)
        except Exception as e2:  # noqa: BLE001 - any YAML error
            raise LoadError("cannot parse MLmodel: %s" % str(e2).replace("\n", " "))
    if not isinstance(doc, dict):
        raise LoadError("MLmodel is not a YAML mapping")
    return doc


# --------------------------------------------------------------------------
# Models


class Model:
    """A loaded model: a predict function plus what the protocols report about it."""

    def __init__(self, flavor, platform, predict, tabular=False, n_features=None, signature=None):
        self.flavor = flavor
        self.platform = platform
        self.predict = predict
        self.tabular = tabular  # needs a 2-D array (sklearn, xgboost)
        self.n_features = n_features
        self.signature = signature or {}
        self.columns = [c.get("name") for c in self.signature.get("inputs", [])
                        if isinstance(c, dict) and c.get("type") != "tensor" and c.get("name")]


def _import(name):
    """Imports a module, mapping a missing package to MissingPackage."""
    import importlib
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise MissingPackage(e.name or name)


def _signature(meta):
    sig = meta.get("signature")
    out = {}
    if not isinstance(sig, dict):
        return out
    for k in ("inputs", "outputs"):
        v = sig.get(k)
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except ValueError:
                v = None
        if isinstance(v, list):
            out[k] = v
    return out


def _unpickle(path, what, versions=""):
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


def _with_code(model_dir, code):
    if code:
        p = os.path.join(model_dir, code)
        if not os.path.isdir(p):
            raise LoadError("code directory %s not found" % p)
        sys.path.insert(0, p)


def load_sklearn(model_dir, fl, meta, predict_fn="predict"):
    fmt = fl.get("serialization_format") or "cloudpickle"
    if fmt not in ("pickle", "cloudpickle"):
        raise LoadError('unsupported sklearn serialization_format "%s" (want pickle or cloudpickle)' % fmt)
    _with_code(model_dir, fl.get("code"))
    sklearn = _import("sklearn")
    if fmt == "cloudpickle":
        _import("cloudpickle")
    name = fl.get("pickled_model") or fl.get("model_path") or "model.pkl"
    saved = fl.get("sklearn_version")
    hint = ""
    if saved and str(saved) != sklearn.__version__:
        hint = " (saved with scikit-learn %s, this machine has %s)" % (saved, sklearn.__version__)
    model = _unpickle(os.path.join(model_dir, name), "sklearn model", hint)
    fn = getattr(model, predict_fn or "predict", None)
    if fn is None:
        raise LoadError("sklearn model %s has no %s() method" % (type(model).__name__, predict_fn))
    n = getattr(model, "n_features_in_", None)
    return Model("sklearn", "sklearn_sklearn", fn, tabular=True,
                 n_features=int(n) if isinstance(n, (int, np.integer)) else None, signature=_signature(meta))


# Optional modules xgboost probes with an import on every predict call; when
# they are not installed, a None entry in sys.modules makes each probe fail
# fast instead of scanning sys.path (~0.5 ms per predict).
_XGB_OPTIONAL = ("cudf", "cupy", "cupyx", "dask_cudf", "datatable", "modin", "pyarrow", "dask", "pandas",
                 "scipy")


def _cache_sklearn_param_names():
    """XGBoost's scikit-learn wrappers call get_params() three times per
    predict, and each call introspects __init__'s signature (~40% of a
    single-row predict). The answer depends only on the class: memoize it."""
    try:
        base = sys.modules["sklearn.base"].BaseEstimator
        orig = base.__dict__["_get_param_names"].__func__
    except (KeyError, AttributeError):
        return
    cache = {}

    def _get_param_names(cls):
        names = cache.get(cls)
        if names is None:
            names = cache[cls] = orig(cls)
        return names
    base._get_param_names = classmethod(_get_param_names)


def load_xgboost(model_dir, fl, meta):
    import importlib.util
    for mod in _XGB_OPTIONAL:
        if mod not in sys.modules and importlib.util.find_spec(mod) is None:
            sys.modules[mod] = None
    _with_code(model_dir, fl.get("code"))
    xgb = _import("xgboost")
    data = os.path.join(model_dir, fl.get("data") or "model.xgb")
    if not os.path.isfile(data):
        raise LoadError("xgboost model file not found: %s" % data)
    cls_name = fl.get("model_class") or "xgboost.core.Booster"
    mod_name, _, attr = cls_name.rpartition(".")
    if not mod_name.startswith("xgboost"):
        raise LoadError('unsupported xgboost model_class "%s"' % cls_name)
    klass = getattr(_import(mod_name), attr, None)
    if klass is None:
        raise LoadError('xgboost %s has no model_class "%s"' % (xgb.__version__, cls_name))
    sig = _signature(meta)
    try:
        if isinstance(klass, type) and issubclass(klass, xgb.Booster):
            booster = klass()
            booster.load_model(data)
            dmatrix = xgb.DMatrix

            def predict(x):
                return booster.predict(dmatrix(x))
            n = booster.num_features()
            return Model("xgboost", "xgboost_booster", predict, tabular=True, n_features=n, signature=sig)
        model = klass()
        model.load_model(data)
    except Exception as e:  # noqa: BLE001
        raise LoadError("cannot load xgboost model %s: %s: %s" % (data, type(e).__name__, e))
    _cache_sklearn_param_names()
    n = getattr(model, "n_features_in_", None)
    return Model("xgboost", "xgboost_xgboost", model.predict, tabular=True,
                 n_features=int(n) if isinstance(n, (int, np.integer)) else None, signature=sig)


def load_pytorch(model_dir, fl, meta, data=None):
    _with_code(model_dir, fl.get("code"))
    torch = _import("torch")
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
        return from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float32)))

    def predict(x):
        with no_grad():
            if isinstance(x, dict):
                out = model(**{k: to_tensor(v) for k, v in x.items()})
            else:
                out = model(to_tensor(x))
        return out

    return Model("pytorch", "pytorch_torchscript" if hasattr(model, "code") else "pytorch_pytorch", predict,
                 signature=_signature(meta))


def _install_mlflow_shim():
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
    _with_code(model_dir, pf.get("code"))
    _install_mlflow_shim()
    _import("cloudpickle")
    name = pf.get("python_model") or "python_model.pkl"
    pm = _unpickle(os.path.join(model_dir, name), "python model")
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
    return Model("python_function", "mlflow_pyfunc", predict, signature=_signature(meta))


def load_pyfunc_loader(model_dir, pf, meta, loader):
    import importlib
    _with_code(model_dir, pf.get("code"))
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
    return Model("python_function", "mlflow_pyfunc", pred, signature=_signature(meta))


def load_model(model_dir):
    """Loads the MLflow model directory, choosing the flavor to serve."""
    path = os.path.join(model_dir, "MLmodel")
    if not os.path.isdir(model_dir):
        raise LoadError("model directory %s not found" % model_dir)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise LoadError("MLmodel not found in %s" % model_dir)
    except (OSError, UnicodeDecodeError) as e:
        raise LoadError("cannot read %s: %s" % (path, e))
    meta = parse_mlmodel(text)
    flavors = meta.get("flavors")
    if not isinstance(flavors, dict) or not flavors:
        raise LoadError("%s has no flavors" % path)

    def flavor(name):
        v = flavors.get(name)
        return v if isinstance(v, dict) else {}

    pf = flavor("python_function")
    if "sklearn" in flavors:
        return load_sklearn(model_dir, flavor("sklearn"), meta, pf.get("predict_fn") or "predict")
    if "xgboost" in flavors:
        return load_xgboost(model_dir, flavor("xgboost"), meta)
    if "pytorch" in flavors:
        return load_pytorch(model_dir, flavor("pytorch"), meta)
    if "python_function" in flavors:
        loader = pf.get("loader_module")
        if not loader or not isinstance(loader, str):
            raise LoadError("python_function flavor in %s has no loader_module" % path)
        if loader == "mlflow.pyfunc.model":
            return load_python_model(model_dir, pf, meta)
        if loader == "mlflow.sklearn":
            return load_sklearn(model_dir, {"pickled_model": pf.get("model_path") or pf.get("data"),
                                            "code": pf.get("code")}, meta, pf.get("predict_fn") or "predict")
        if loader == "mlflow.xgboost":
            return load_xgboost(model_dir, {"data": pf.get("data"), "code": pf.get("code"),
                                            "model_class": "xgboost.core.Booster"}, meta)
        if loader == "mlflow.pytorch":
            return load_pytorch(model_dir, {"code": pf.get("code")}, meta, pf.get("data"))
        if loader.startswith("mlflow."):
            others = [f for f in flavors if f != "python_function"]
            raise NoRuntime(others[0] if others else loader[len("mlflow."):], model_dir)
        return load_pyfunc_loader(model_dir, pf, meta, loader)
    raise NoRuntime(next(iter(flavors)), model_dir)


# --------------------------------------------------------------------------
# Inputs and outputs

V2_DTYPES = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BYTES": "object",
}
NP_TO_V2 = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64",
}
SIG_TO_V2 = {
    "double": "FP64", "float": "FP32", "long": "INT64", "integer": "INT32", "boolean": "BOOL",
    "string": "BYTES", "binary": "BYTES", "datetime": "BYTES",
}


def _array(value, what):
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as e:
        raise BadRequest("%s must be a rectangular (non-ragged) array: %s" % (what, e))


def _check_tabular(model, x, what):
    if x.dtype.kind in "US":  # mixed numbers and strings: keep the Python values
        x = x.astype(object)
    if model.n_features is None:  # e.g. a text pipeline: any shape goes
        return x
    if x.ndim != 2:
        if x.ndim == 1 and x.size and model.n_features and x.size == model.n_features:
            raise BadRequest("%s must be a list of rows (2-D): got one flat row, send [%s]"
                             % (what, json.dumps(x.tolist())[:200]))
        raise BadRequest("%s must be a 2-D array of rows x features, got shape [%s]"
                         % (what, ", ".join(str(d) for d in x.shape)))
    if model.n_features is not None and x.shape[1] != model.n_features:
        raise BadRequest("%s: each row has %d features, the model expects %d"
                         % (what, x.shape[1], model.n_features))
    return x


def _records_to_rows(model, records, what):
    if not model.columns:
        raise BadRequest("%s are objects (records), but the model has no column-based signature; "
                         "send rows of values instead" % what)
    rows = []
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise BadRequest("%s[%d] is not an object like the others" % (what, i))
        try:
            rows.append([r[c] for c in model.columns])
        except KeyError as e:
            raise BadRequest("%s[%d] lacks column %s" % (what, i, e))
    return rows


def v1_input(model, instances):
    if model.tabular:
        if isinstance(instances, list) and instances and isinstance(instances[0], dict):
            instances = _records_to_rows(model, instances, "instances")
        return _check_tabular(model, _array(instances, "instances"), "instances")
    if isinstance(instances, list) and instances and not isinstance(instances[0], (dict, str)):
        try:
            x = np.asarray(instances)
            if x.dtype != object:
                return x
        except (ValueError, TypeError):
            pass
        if model.flavor == "pytorch":
            raise BadRequest("instances must be a rectangular (non-ragged) numeric array")
    return instances


def v2_input(model, inputs):
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest('"inputs" must be a non-empty list of tensors: '
                         '[{"name": ..., "shape": [...], "datatype": "FP32", "data": [...]}]')
    tensors = []
    for k, t in enumerate(inputs):
        if not isinstance(t, dict):
            raise BadRequest("inputs[%d] must be an object" % k)
        name = t.get("name")
        label = 'input "%s"' % name if isinstance(name, str) else "inputs[%d]" % k
        shape = t.get("shape")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                   for d in shape)):
            raise BadRequest("%s: shape must be a list of non-negative integers" % label)
        dt = t.get("datatype")
        np_dt = V2_DTYPES.get(dt) if isinstance(dt, str) else None
        if np_dt is None:
            raise BadRequest("%s: unknown datatype %r (want one of %s)" % (label, dt, ", ".join(V2_DTYPES)))
        data = t.get("data")
        if data is None:
            raise BadRequest("%s: missing data" % label)
        try:
            if np_dt == "object":
                arr = np.asarray(data, dtype=object)
            else:
                arr = np.asarray(data, dtype=np_dt)
        except (ValueError, TypeError, OverflowError) as e:
            raise BadRequest("%s: data is not a rectangular %s array: %s" % (label, dt, e))
        want = 1
        for d in shape:
            want *= d
        if arr.size != want:
            raise BadRequest("%s: shape %s needs %d values, data has %d" % (label, shape, want, arr.size))
        tensors.append((name, arr.reshape(shape)))
    if model.tabular:
        if len(tensors) == 1:
            x = tensors[0][1]
        else:
            names = [n for n, _ in tensors]
            if model.columns and sorted(names) == sorted(model.columns):
                by = dict(tensors)
                tensors = [(c, by[c]) for c in model.columns]
            n = tensors[0][1].shape[0] if tensors[0][1].ndim else 1
            cols = []
            for name, a in tensors:
                if a.ndim == 0 or a.shape[0] != n:
                    raise BadRequest('input "%s": all inputs need the same first dimension (%d)' % (name, n))
                cols.append(a.reshape(n, -1))
            x = np.concatenate(cols, axis=1)
        return _check_tabular(model, x, "input")
    if len(tensors) == 1:
        return tensors[0][1]
    return {(name if isinstance(name, str) else "input-%d" % k): a for k, (name, a) in enumerate(tensors)}


def to_numpy(y):
    """Converts a prediction to a numpy array (or a dict / list of them)."""
    if isinstance(y, np.ndarray):
        return y
    if hasattr(y, "detach") and hasattr(y, "numpy"):  # torch.Tensor
        return y.detach().cpu().numpy()
    if isinstance(y, dict):
        return {k: to_numpy(v) for k, v in y.items()}
    if isinstance(y, tuple):
        return [to_numpy(v) for v in y]
    if hasattr(y, "to_numpy"):  # pandas
        return y.to_numpy()
    return np.asarray(y)


def json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if hasattr(o, "detach") and hasattr(o, "numpy"):
        return o.detach().cpu().numpy().tolist()
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    if hasattr(o, "to_dict"):  # pandas
        try:
            return o.to_dict(orient="records")
        except TypeError:
            return o.to_dict()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError("%s is not JSON serializable" % type(o).__name__)


def _denan(v):
    if isinstance(v, float):
        return v if v == v and v not in (float("inf"), float("-inf")) else None
    if isinstance(v, list):
        return [_denan(x) for x in v]
    if isinstance(v, dict):
        return {k: _denan(x) for k, x in v.items()}
    return v


_dumps = json.JSONEncoder(default=json_default, allow_nan=False).encode


def dumps(obj):
    try:
        return _dumps(obj).encode()
    except ValueError:  # NaN / Infinity are not JSON: send null
        return json.dumps(_denan(json.loads(json.dumps(obj, default=json_default)))).encode()


def v2_outputs(y):
    y = to_numpy(y)
    if isinstance(y, dict):
        items = list(y.items())
    elif isinstance(y, list):
        items = [("output-%d" % k, v) for k, v in enumerate(y)]
    else:
        items = [("predict", y)]
    outs = []
    for name, a in items:
        a = to_numpy(a)
        if not isinstance(a, np.ndarray):
            a = np.asarray(a)
        dt = NP_TO_V2.get(a.dtype.name)
        if dt is None:
            dt = "BYTES"
            data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in a.ravel().tolist()]
        else:
            data = a.ravel().tolist()
        outs.append({"name": str(name), "shape": list(a.shape), "datatype": dt, "data": data})
    return outs


def v1_predictions(y):
    if isinstance(y, np.ndarray):
        return y.tolist()
    if hasattr(y, "detach") and hasattr(y, "numpy"):
        return y.detach().cpu().numpy().tolist()
    if isinstance(y, tuple):
        return [v1_predictions(v) for v in y]
    return y


def _sig_tensors(specs, fallback):
    out = []
    for k, s in enumerate(specs or []):
        if not isinstance(s, dict):
            continue
        if s.get("type") == "tensor":
            ts = s.get("tensor-spec") or {}
            out.append({"name": s.get("name") or (fallback if k == 0 else "%s-%d" % (fallback, k)),
                        "datatype": NP_TO_V2.get(str(ts.get("dtype")), "BYTES"),
                        "shape": ts.get("shape") or [-1]})
        else:
            out.append({"name": s.get("name") or "%s-%d" % (fallback, k),
                        "datatype": SIG_TO_V2.get(str(s.get("type")), "BYTES"), "shape": [-1]})
    return out


# --------------------------------------------------------------------------
# HTTP

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           411: "Length Required", 413: "Payload Too Large", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}

_HEAD_CACHE = {}
_pack_double = __import__("struct").Struct("d").pack_into
_unpack_double = __import__("struct").Struct("d").unpack_from


def response(status, body, close=False, extra=b""):
    key = (status, close, extra)
    head = _HEAD_CACHE.get(key)
    if head is None:
        head = ("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n" % (status, REASONS.get(status, "Error"))
                ).encode() + extra + (b"Connection: close\r\n" if close else b"") + b"Content-Length: "
        _HEAD_CACHE[key] = head
    return b"".join((head, str(len(body)).encode(), b"\r\n\r\n", body))


def error(status, msg, close=False, extra=b""):
    return response(status, dumps({"error": msg}), close, extra)


def ok(body):
    return 200, body, b""


def err(status, msg, extra=b""):
    """An error result of App.handle: (status, JSON body, extra headers)."""
    return status, dumps({"error": msg}), extra


class App:
    """Routes requests to the model; shared by every connection of a worker."""

    def __init__(self, model, name, version):
        self.model = model
        self.name = name
        self.version = version
        self.last_request = time.monotonic()
        self.shm = None  # worker mode: shared memory where the supervisor reads last_request
        self.shm_offset = 0
        self.v1_status = dumps({"name": name, "ready": True})
        self.v1_list = dumps({"models": [name]})
        self.live = dumps({"live": True})
        self.ready = dumps({"ready": True})
        self.v2_ready = dumps({"name": name, "ready": True})
        self.root = dumps({"status": "alive"})
        self.server_meta = dumps({"name": "merlin-modelserver", "version": "1", "extensions": []})
        meta = {"name": name, "versions": [version], "platform": model.platform}
        ins = _sig_tensors(model.signature.get("inputs"), "input")
        outs = _sig_tensors(model.signature.get("outputs"), "predict")
        if ins:
            meta["inputs"] = ins
        if outs:
            meta["outputs"] = outs
        self.v2_meta = dumps(meta)
        self.simple = {"/v2/health/live": self.live, "/v2/health/ready": self.ready, "/v2": self.server_meta,
                       "/v1/models": self.v1_list, "/": self.root}

    def not_found_model(self, name):
        return err(404, 'model "%s" not found (this server serves "%s")' % (name, self.name))

    def handle(self, method, path, body):
        """Returns (status, body, extra headers) for one request."""
        self.last_request = now = time.monotonic()
        if self.shm is not None:
            _pack_double(self.shm, self.shm_offset, now)
        if "%" in path:
            from urllib.parse import unquote
            path = unquote(path)
        if path.startswith("/v1/models/"):
            rest = path[11:]
            if rest.endswith(":predict"):
                name = rest[:-8]
                if method != "POST":
                    return err(405, "use POST for %s" % path, b"Allow: POST\r\n")
                if name != self.name:
                    return self.not_found_model(name)
                return self.v1_predict(body)
            if method != "GET":
                return err(405, "use GET for %s" % path, b"Allow: GET\r\n")
            if rest != self.name:
                return self.not_found_model(rest)
            return ok(self.v1_status)
        if path.startswith("/v2/models/"):
            parts = path[11:].split("/")
            name = parts[0]
            rest = parts[1:]
            if len(rest) >= 2 and rest[0] == "versions":
                if name == self.name and rest[1] != self.version:
                    return err(404, 'model "%s" has no version "%s" (this server serves "%s")'
                                 % (name, rest[1], self.version))
                rest = rest[2:]
            if rest == ["infer"]:
                if method != "POST":
                    return err(405, "use POST for %s" % path, b"Allow: POST\r\n")
                if name != self.name:
                    return self.not_found_model(name)
                return self.v2_infer(body)
            if rest == [] or rest == ["ready"]:
                if method != "GET":
                    return err(405, "use GET for %s" % path, b"Allow: GET\r\n")
                if name != self.name:
                    return self.not_found_model(name)
                return ok(self.v2_ready if rest else self.v2_meta)
            return err(404, "no such endpoint: %s" % path)
        simple = self.simple.get(path)
        if simple is not None:
            if method != "GET":
                return err(405, "use GET for %s" % path, b"Allow: GET\r\n")
            return ok(simple)
        return err(404, "no such endpoint: %s" % path)

    def _json(self, body):
        if not body:
            raise BadRequest("empty request body; send JSON")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest("request body is not valid JSON: %s" % e)

    def v1_predict(self, body):
        try:
            req = self._json(body)
            if not isinstance(req, dict):
                raise BadRequest('request must be a JSON object like {"instances": [[...], ...]}')
            instances = req.get("instances")
            if instances is None:
                instances = req.get("inputs")
            if instances is None:
                raise BadRequest('request needs "instances" (or "inputs"): {"instances": [[...], ...]}')
            x = v1_input(self.model, instances)
        except BadRequest as e:
            return err(400, str(e))
        try:
            y = self.model.predict(x)
            return ok(dumps({"predictions": v1_predictions(y)}))
        except Exception as e:  # noqa: BLE001
            return err(500, "prediction failed: %s: %s" % (type(e).__name__, e))

    def v2_infer(self, body):
        try:
            req = self._json(body)
            if not isinstance(req, dict):
                raise BadRequest('request must be a JSON object like {"inputs": [...]}')
            x = v2_input(self.model, req.get("inputs"))
        except BadRequest as e:
            return err(400, str(e))
        try:
            y = self.model.predict(x)
            out = {"model_name": self.name, "model_version": self.version}
            rid = req.get("id")
            if rid is not None:
                out["id"] = rid
            out["outputs"] = v2_outputs(y)
            return ok(dumps(out))
        except Exception as e:  # noqa: BLE001
            return err(500, "prediction failed: %s: %s" % (type(e).__name__, e))


class HTTPConnection(asyncio.Protocol):
    """One client connection: HTTP/1.1 keep-alive + pipelining, Content-Length
    or chunked request bodies, one transport.write per batch of responses."""

    __slots__ = ("server", "app", "transport", "buf", "head", "need", "chunked", "continued", "last_active",
                 "closing")

    def __init__(self, server):
        self.server = server
        self.app = server.app
        self.transport = None
        self.buf = b""
        self.head = None  # (method, path, keep_alive) of the request whose body is awaited
        self.need = 0
        self.chunked = False
        self.continued = False
        self.last_active = time.monotonic()
        self.closing = False

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.server.conns.add(self)

    def connection_lost(self, exc):
        self.server.conns.discard(self)
        self.server.conn_closed()

    def pause_writing(self):
        # The client pipelines faster than it reads responses: stop reading
        # requests until the write buffer drains.
        self.transport.pause_reading()

    def resume_writing(self):
        if not self.closing:
            self.transport.resume_reading()

    def idle(self):
        return not self.buf and self.head is None

    def data_received(self, data):
        if self.closing:
            return
        self.last_active = time.monotonic()
        if self.buf:
            self.buf += data  # a bytearray: appending is amortised O(1)
            data = self.buf
        out = []
        pos = 0
        n = len(data)
        close = False
        while pos < n or self.head is not None:
            if self.head is None:
                end = data.find(b"\r\n\r\n", pos)
                if end < 0:
                    if n - pos > MAX_HEADER_BYTES:
                        out.append(error(431, "request headers too large", close=True))
                        close = True
                        pos = n
                    break
                if end - pos > MAX_HEADER_BYTES:
                    out.append(error(431, "request headers too large", close=True))
                    close = True
                    break
                r = self._parse_head(data, pos, end)
                pos = end + 4
                if isinstance(r, bytes):  # error response; the stream is out of sync: close
                    out.append(r)
                    close = True
                    break
            if self.chunked:
                body, pos2 = self._dechunk(data, pos)
                if body is None:
                    if pos2 is not None:  # malformed
                        out.append(error(400, pos2, close=True))
                        close = True
                    elif not self.continued and self.head[3]:
                        self.continued = True
                        out.append(b"HTTP/1.1 100 Continue\r\n\r\n")
                    break
                pos = pos2
            else:
                if n - pos < self.need:
                    if not self.continued and self.head[3]:
                        self.continued = True
                        out.append(b"HTTP/1.1 100 Continue\r\n\r\n")
                    break
                body = data[pos:pos + self.need]
                pos += self.need
            method, path, keep, _ = self.head
            self.head = None
            self.continued = False
            if self.server.stopping:
                keep = False
            status, rbody, extra = self.app.handle(method, path, body)
            out.append(response(status, rbody, not keep, extra))
            if not keep:
                close = True
                break
        if close or pos >= n:
            self.buf = b""
        elif pos > 0 or data is not self.buf:
            self.buf = bytearray(data[pos:])
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if close:
            self.closing = True
            self.buf = b""
            self.transport.close()
        elif self.server.stopping and self.idle():
            self.closing = True
            self.transport.close()

    def _parse_head(self, data, pos, end):
        """Parses the request line and headers; returns an error response or None."""
        head = data[pos:end]
        if head.startswith(b"\r\n"):  # tolerate stray CRLF between requests
            head = head.lstrip(b"\r\n")
            if not head:
                self.head = None
                return error(400, "empty request", close=True)
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            return error(400, "malformed request line", close=True)
        method, target, version = parts
        if version == b"HTTP/1.1":
            keep = True
        elif version == b"HTTP/1.0":
            keep = False
        else:
            return error(505, "only HTTP/1.1 and HTTP/1.0 are supported", close=True)
        length = 0
        chunked = False
        expect = False
        has_length = False
        for line in lines[1:]:
            k, sep, v = line.partition(b":")
            if not sep:
                return error(400, "malformed header line", close=True)
            k = k.lower()
            if k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    return error(400, "bad Content-Length", close=True)
                if length < 0:
                    return error(400, "bad Content-Length", close=True)
                has_length = True
            elif k == b"connection":
                v = v.lower()
                if b"close" in v:
                    keep = False
                elif b"keep-alive" in v:
                    keep = True
            elif k == b"transfer-encoding":
                te = v.strip().lower()
                if te == b"chunked":
                    chunked = True
                elif te != b"identity":
                    return error(501, "unsupported Transfer-Encoding %s" % te.decode("latin-1"), close=True)
            elif k == b"expect":
                expect = v.strip().lower() == b"100-continue"
        if chunked and has_length:
            return error(400, "both Content-Length and Transfer-Encoding", close=True)
        if length > MAX_BODY_BYTES:
            return error(413, "request body larger than %d bytes" % MAX_BODY_BYTES, close=True)
        target = target.decode("latin-1")
        q = target.find("?")
        if q >= 0:
            target = target[:q]
        if target.startswith("http://") or target.startswith("https://"):  # absolute-form
            s = target.find("/", target.find("//") + 2)
            target = target[s:] if s >= 0 else "/"
        self.head = (method.decode("latin-1"), target, keep, expect and version == b"HTTP/1.1")
        self.need = length
        self.chunked = chunked
        return None

    def _dechunk(self, data, pos):
        """Returns (body, new_pos) when a complete chunked body is buffered,
        (None, None) when more data is needed, (None, message) when malformed."""
        parts = []
        total = 0
        n = len(data)
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                return None, (None if n - pos < 1024 else "bad chunk header")
            size_s = data[pos:eol].split(b";", 1)[0].strip()
            try:
                size = int(size_s, 16)
            except ValueError:
                return None, "bad chunk size"
            total += size
            if total > MAX_BODY_BYTES:
                return None, "request body too large"
            pos = eol + 2
            if size == 0:
                # trailers, then an empty line
                while True:
                    eol = data.find(b"\r\n", pos)
                    if eol < 0:
                        return None, None
                    line = data[pos:eol]
                    pos = eol + 2
                    if not line:
                        self.chunked = False
                        return b"".join(parts), pos
            if n - pos < size + 2:
                return None, None
            parts.append(data[pos:pos + size])
            if data[pos + size:pos + size + 2] != b"\r\n":
                return None, "bad chunk terminator"
            pos += size + 2


class Server:
    """A worker's event loop: accepts on the shared listening socket and serves.

    With several workers on one socket, the kernel hands a new connection to
    whichever worker calls accept first, and asyncio's own accept loop takes
    every pending connection at once: long-lived keep-alive connections (the
    router keeps a few) then pile up on one worker. So in multi-worker mode
    each worker publishes how many connections it holds (shared memory, next
    to its last-request time), accepts one connection per wake-up, and leaves
    a pending connection to a less loaded worker for up to ACCEPT_DEFER
    seconds (it may be busy in a long predict)."""

    ACCEPT_DEFER = 0.01

    def __init__(self, sock, app, supervisor_pid=None, orphan_ppid=None, orphan_timeout=300.0, balance=None):
        self.sock = sock
        self.app = app
        self.conns = set()
        self.connecting = 0  # accepted, transport not made yet
        self.balance = balance  # worker mode: (shm, my offset, [other offsets])
        self.defer_since = None
        self.accepting = False
        self.stopping = False
        self.supervisor_pid = supervisor_pid  # worker mode: exit when the supervisor is gone
        self.orphan_ppid = orphan_ppid  # single-process mode: the parent at start
        self.orphan_timeout = orphan_timeout
        self.loop = None
        self.done = None
        self.ticks = 0
        self.deadline = 0.0

    def run(self):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.done = self.loop.create_future()
        self.sock.setblocking(False)
        self._resume_accept()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stop, "signal %s" % signal.Signals(sig).name)
        self.loop.call_later(1.0, self.tick)
        try:
            self.loop.run_until_complete(self.done)
        finally:
            self.loop.close()

    def _resume_accept(self):
        if not self.stopping and not self.accepting:
            self.accepting = True
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def _pause_accept(self):
        if self.accepting:
            self.accepting = False
            self.loop.remove_reader(self.sock.fileno())

    def publish_load(self):
        if self.balance is not None:
            shm, off, _ = self.balance
            _pack_double(shm, off + 8, 1e9 if self.stopping else len(self.conns) + self.connecting)

    def _accept(self):
        if self.balance is not None:
            shm, off, others = self.balance
            mine = len(self.conns) + self.connecting
            if others and mine > min(_unpack_double(shm, o + 8)[0] for o in others):
                now = time.monotonic()
                if self.defer_since is None:
                    self.defer_since = now
                if now - self.defer_since < self.ACCEPT_DEFER:
                    self._pause_accept()
                    self.loop.call_later(0.001, self._resume_accept)
                    return
            self.defer_since = None
        for _ in range(1 if self.balance is not None else 64):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as e:  # EMFILE, ENFILE, ENOBUFS...: back off, keep serving
                log("accept: %s; pausing accepts for 1s" % e)
                self._pause_accept()
                self.loop.call_later(1.0, self._resume_accept)
                return
            conn.setblocking(False)
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            self.connecting += 1
            self.publish_load()
            self.loop.create_task(self._connect(conn))

    async def _connect(self, conn):
        try:
            await self.loop.connect_accepted_socket(lambda: HTTPConnection(self), conn)
        except Exception as e:  # noqa: BLE001 - the client went away
            conn.close()
            if not isinstance(e, OSError):
                log("connection setup failed: %s: %s" % (type(e).__name__, e))
        finally:
            self.connecting -= 1
            self.publish_load()

    def tick(self):
        if self.done.done():
            return
        self.ticks += 1
        now = time.monotonic()
        if self.supervisor_pid is not None and os.getppid() != self.supervisor_pid:
            self.stop("supervisor exited")
        elif (self.orphan_ppid is not None and self.orphan_timeout > 0 and os.getppid() != self.orphan_ppid
              and now - self.app.last_request >= self.orphan_timeout):
            log("orphaned (parent %d gone) and no request for %.0fs: exiting" % (self.orphan_ppid,
                                                                               now - self.app.last_request))
            self.stop(None)
        if self.ticks % 10 == 0 and not self.stopping:
            for c in list(self.conns):  # idle keep-alive, or a stalled request
                if now - c.last_active > IDLE_CONNECTION_TIMEOUT:
                    c.closing = True
                    c.transport.close()
        if self.stopping:
            if (not self.conns and not self.connecting) or now >= self.deadline:
                for c in list(self.conns):
                    c.transport.abort()
                self.done.set_result(None)
                return
        self.loop.call_later(0.1 if self.stopping else 1.0, self.tick)

    def stop(self, why):
        if self.stopping:
            return
        if why:
            log("%s: stopping (finishing in-flight requests)" % why)
        self.stopping = True
        self.publish_load()
        self.deadline = time.monotonic() + SHUTDOWN_GRACE
        self._pause_accept()
        self.sock.close()  # this process's copy: new connections go to the backlog of other copies, if any
        for c in list(self.conns):
            if c.idle():
                c.closing = True
                c.transport.close()
        if not self.conns and not self.connecting:
            self.done.set_result(None)

    def conn_closed(self):
        self.publish_load()
        if self.stopping and not self.conns and not self.connecting and not self.done.done():
            self.done.set_result(None)


def log(msg):
    try:
        sys.stderr.write("merlin: %s\n" % msg)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def example_row(model_dir, model):
    """One input row for warming the model up: the first row of MLflow's saved
    input example, else zeros as wide as the model's features, else None."""
    try:
        with open(os.path.join(model_dir, "input_example.json"), "rb") as f:
            doc = json.loads(f.read())
        for key in ("inputs", "instances", "data"):
            rows = doc.get(key) if isinstance(doc, dict) else None
            if isinstance(rows, list) and rows and isinstance(rows[0], list):
                return rows[0]
    except (OSError, ValueError):
        pass
    n = model.n_features
    if not n:
        for t in _sig_tensors(model.signature.get("inputs"), "input") or []:
            shape = t.get("shape") if isinstance(t, dict) else None
            if isinstance(shape, list) and len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 0:
                n = shape[1]
            break
    return [0.0] * n if n else None


WARM_UP_PREDICTIONS = 3


def warm_up(app, model_dir):
    """Runs a few predictions before the server reports ready, so that lazy
    imports and first-call costs inside the ML library are not paid by the
    first clients (a canary judged on its latency would look slow). Failures
    are ignored: whether the model answers well is for the requests to show."""
    try:
        row = example_row(model_dir, app.model)
    except Exception:  # noqa: BLE001
        return
    if row is None:
        return
    body = dumps({"instances": [row]})
    for _ in range(WARM_UP_PREDICTIONS):
        try:
            app.v1_predict(body)
        except Exception:  # noqa: BLE001
            return


# --------------------------------------------------------------------------
# Process management


def supervise(sock, app, workers, orphan_timeout, ppid):
    """Pre-forks workers sharing the loaded model and listening socket; restarts
    crashed ones; on SIGTERM/SIGINT stops them gracefully."""
    import gc
    import mmap
    import struct
    me = os.getpid()
    # Per worker: last request time (monotonic), connections held.
    shm = mmap.mmap(-1, 16 * workers)
    for i in range(workers):
        struct.pack_into("dd", shm, 16 * i, time.monotonic(), 0.0)
    sigs = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    gc.collect()
    gc.freeze()  # keep the model's pages shared (copy-on-write) between workers

    def spawn(slot):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)
                app.shm = shm
                app.shm_offset = 16 * slot
                struct.pack_into("d", shm, 16 * slot + 8, 0.0)
                others = [16 * i for i in range(workers) if i != slot]
                Server(sock, app, supervisor_pid=me, balance=(shm, 16 * slot, others)).run()
            except BaseException as e:  # noqa: BLE001
                if not isinstance(e, (KeyboardInterrupt, SystemExit)):
                    log("worker %d crashed: %s: %s" % (os.getpid(), type(e).__name__, e))
                    code = 1
            finally:
                os._exit(code)
        return pid

    children = {spawn(i): i for i in range(workers)}
    restarts = []
    stopping = False
    deadline = None
    pending = []  # slots waiting to be restarted
    while children or (pending and not stopping):
        info = signal.sigtimedwait(sigs, 1.0)
        if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT) and not stopping:
            log("signal %s: stopping %d workers" % (signal.Signals(info.si_signo).name, len(children)))
            stopping = True
            deadline = time.monotonic() + SHUTDOWN_GRACE + 2
            for pid in children:
                _kill(pid, signal.SIGTERM)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                break
            if pid == 0:
                break
            slot = children.pop(pid, None)
            if slot is None:
                continue
            struct.pack_into("d", shm, 16 * slot + 8, 1e9)  # nobody defers to a dead worker
            if not stopping:
                log("worker %d exited (%s); restarting it" % (pid, _status(status)))
                pending.append(slot)
        now = time.monotonic()
        if pending and not stopping:
            restarts = [t for t in restarts if now - t < 60]
            if len(restarts) < 10 * workers:
                while pending:
                    restarts.append(now)
                    slot = pending.pop()
                    children[spawn(slot)] = slot
        if stopping and children and now >= deadline:
            for pid in children:
                _kill(pid, signal.SIGKILL)
            deadline = now + 5
        if not stopping and orphan_timeout > 0 and os.getppid() != ppid:
            last = max(struct.unpack_from("d", shm, 16 * i)[0] for i in range(workers))
            if now - last >= orphan_timeout:
                log("orphaned (parent %d gone) and no request for %.0fs: exiting" % (ppid, now - last))
                stopping = True
                deadline = now + SHUTDOWN_GRACE + 2
                for pid in children:
                    _kill(pid, signal.SIGTERM)
    return 0


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _status(status):
    if os.WIFSIGNALED(status):
        return "signal %d" % os.WTERMSIG(status)
    return "exit code %d" % os.WEXITSTATUS(status)


def parse_args(argv):
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            sys.stderr.write("merlin: bad arguments: %s\n" % message)
            sys.exit(EXIT_USAGE)

    p = Parser(prog="server.py", description="Merlin local model server")
    p.add_argument("--model-dir", required=True)
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


def listening_socket(a):
    if a.fd is not None:
        try:
            sock = socket.socket(fileno=a.fd)
        except OSError as e:
            raise LoadError("--fd %d is not a socket: %s" % (a.fd, e))
        try:
            if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                raise LoadError("--fd %d is not a listening socket" % a.fd)
        except OSError as e:
            raise LoadError("--fd %d: %s" % (a.fd, e))
    else:
        try:
            sock = socket.create_server((a.host, a.port), backlog=4096, reuse_port=False)
        except OSError as e:
            raise LoadError("cannot listen on %s:%d: %s" % (a.host, a.port, e))
    sock.setblocking(False)
    return sock


def _skip_setuptools_distutils():
    """Debian's setuptools hooks `import distutils` (which joblib, and so every
    scikit-learn import, does) to load setuptools and pkg_resources: ~0.5 s of
    startup for nothing. The standard library's distutils is enough here."""
    hack = sys.modules.get("_distutils_hack")
    if hack is not None and "distutils" not in sys.modules:
        try:
            hack.remove_shim()
        except Exception:  # noqa: BLE001 - an unknown setuptools: keep its hook
            pass


def main(argv=None):
    start = time.monotonic()
    ppid = os.getppid()  # before loading: the parent may die while the model loads

    def exit_now(signum, frame):  # SIGTERM/SIGINT before serving: stop at once, cleanly
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, exit_now)
    signal.signal(signal.SIGINT, exit_now)
    a = parse_args(sys.argv[1:] if argv is None else argv)
    # One BLAS/OpenMP thread per worker unless told otherwise: online predicts
    # are small, and idle OpenMP threads spinning on 2 cores cost milliseconds.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    _skip_setuptools_distutils()
    global np
    code = 0
    try:
        try:
            import numpy
        except ModuleNotFoundError as e:
            raise MissingPackage(e.name)
        np = numpy
        sock = listening_socket(a)
        model = load_model(os.path.abspath(a.model_dir))
    except NoRuntime as e:
        log(str(e))
        return EXIT_NO_RUNTIME
    except MissingPackage as e:
        log(str(e))
        return EXIT_MISSING_PACKAGE
    except LoadError as e:
        log(str(e))
        return EXIT_LOAD_ERROR
    except Exception as e:  # noqa: BLE001
        log("cannot load model %s: %s: %s" % (a.model_dir, type(e).__name__, str(e).replace("\n", " ")))
        return EXIT_LOAD_ERROR
    app = App(model, a.name, a.version)
    warm_up(app, os.path.abspath(a.model_dir))
    if a.workers <= 1:
        import gc
        gc.collect()
        gc.freeze()  # the loaded model is long-lived: keep it out of every full collection
    addr = sock.getsockname()
    sys.stdout.write("merlin: model %s version %s ready: flavor %s, %s:%d, %d worker(s), pid %d, %.0f ms\n"
                     % (a.name, a.version, model.flavor, addr[0], addr[1], a.workers, os.getpid(),
                        (time.monotonic() - start) * 1000))
    sys.stdout.flush()
    if a.workers > 1:
        code = supervise(sock, app, a.workers, a.orphan_timeout, ppid)
    else:
        Server(sock, app, orphan_ppid=ppid, orphan_timeout=a.orphan_timeout).run()
    return code


if __name__ == "__main__":
    sys.exit(main())
