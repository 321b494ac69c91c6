"""The KServe V1 and Open Inference Protocol V2 APIs: request decoding,
routing, response encoding, errors. Transport-free: App.handle takes a
method, a path and a body and returns (status, JSON body, extra headers).

Status codes say whose fault a failure is: 4xx the client's (malformed
JSON, a wrong shape or datatype, values the model cannot use, an unknown
output, a verb the server does not implement), 5xx the model server's own.
The router counts 5xx against a version in a canary's analysis, so input
errors must never be 5xx."""

import json
import struct
import time

import numpy as np

from .errors import BadInput

_pack_double = struct.Struct("d").pack_into


class BadRequest(BadInput):
    """The request is malformed (HTTP 400)."""


def _plain_numbers(x):
    """Whether x is an array of finite numbers: input no numeric model may refuse."""
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf":
        return False
    return x.dtype.kind != "f" or bool(np.isfinite(x).all())


def predict(model, x):
    """Runs the model on decoded input. A ValueError or TypeError of a
    numeric model (sklearn, xgboost, pytorch) fed strings, NaN or infinity is
    the model refusing the client's input: BadInput. Any other failure is
    the model's own, re-raised."""
    try:
        return model.predict(x)
    except BadInput:
        raise
    except (ValueError, TypeError) as e:
        if (model.tabular or model.flavor == "pytorch") and not _plain_numbers(x):
            raise BadInput("the model cannot use this input: %s" % e)
        raise


def requested_outputs(req):
    """The output names an inference request asks for, or None for all."""
    outs = req.get("outputs")
    if outs is None:
        return None
    if not isinstance(outs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outs):
        raise BadRequest('"outputs" must be a list of objects with a "name": [{"name": "predict"}]')
    return [o["name"] for o in outs]


def select_outputs(outs, names):
    """The produced outputs the request asked for, in its order."""
    if names is None:
        return outs
    by = {o["name"]: o for o in outs}
    unknown = [n for n in names if n not in by]
    if unknown:
        raise BadRequest('unknown output %s: this model produces %s'
                         % (", ".join('"%s"' % n for n in unknown), ", ".join('"%s"' % n for n in by)))
    return [by[n] for n in names]


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


def sig_tensors(specs, fallback):
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
        self.v2_meta = dumps({"name": name, "versions": [version], "platform": model.platform,
                              "inputs": sig_tensors(model.signature.get("inputs"), "input"),
                              "outputs": sig_tensors(model.signature.get("outputs"), "predict")})
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
            if rest.endswith(":explain"):
                name = rest[:-8]
                if method != "POST":
                    return err(405, "use POST for %s" % path, b"Allow: POST\r\n")
                if name != self.name:
                    return self.not_found_model(name)
                return err(501, 'model "%s" has no explainer: the local target serves predictions only' % name)
            if ":" in rest:
                return err(404, "no such endpoint: %s (verbs: :predict, :explain)" % path)
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
        except RecursionError:  # e.g. [[[[...]]]] thousands deep: the client's mistake, not a crash
            raise BadRequest("request body nests arrays or objects too deeply")

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
            y = predict(self.model, x)
        except BadInput as e:
            return err(400, str(e))
        except Exception as e:  # noqa: BLE001
            return err(500, "prediction failed: %s: %s" % (type(e).__name__, e))
        try:
            return ok(dumps({"predictions": v1_predictions(y)}))
        except Exception as e:  # noqa: BLE001
            return err(500, "cannot encode the prediction: %s: %s" % (type(e).__name__, e))

    def v2_infer(self, body):
        try:
            req = self._json(body)
            if not isinstance(req, dict):
                raise BadRequest('request must be a JSON object like {"inputs": [...]}')
            rid = req.get("id")
            if rid is not None and not isinstance(rid, str):
                raise BadRequest('"id" must be a string (OIP: it is returned as given)')
            x = v2_input(self.model, req.get("inputs"))
            names = requested_outputs(req)
            y = predict(self.model, x)
        except BadInput as e:
            return err(400, str(e))
        except Exception as e:  # noqa: BLE001
            return err(500, "prediction failed: %s: %s" % (type(e).__name__, e))
        try:
            outs = select_outputs(v2_outputs(y), names)
        except BadRequest as e:
            return err(400, str(e))
        except Exception as e:  # noqa: BLE001
            return err(500, "cannot encode the prediction: %s: %s" % (type(e).__name__, e))
        out = {"model_name": self.name, "model_version": self.version}
        if rid is not None:
            out["id"] = rid
        out["outputs"] = outs
        try:
            return ok(dumps(out))
        except Exception as e:  # noqa: BLE001
            return err(500, "cannot encode the prediction: %s: %s" % (type(e).__name__, e))
