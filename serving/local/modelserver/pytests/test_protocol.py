"""merlin_modelserver.protocol: V1/V2 decoding, routing, encoding, errors."""

import json
import unittest

import numpy as np

from merlin_modelserver import protocol
from merlin_modelserver.loaders.common import Model
from merlin_modelserver.protocol import App, BadRequest


def tabular(n=2, signature=None):
    return Model("sklearn", "sklearn", lambda x: np.asarray(x).sum(axis=1), tabular=True, n_features=n,
                 signature=signature)


def numeric(n=2):
    """A tabular model that, like scikit-learn, converts its input to floats
    and refuses NaN."""
    def predict(x):
        a = np.asarray(x, dtype=np.float64)
        if np.isnan(a).any():
            raise ValueError("Input X contains NaN.")
        return a.sum(axis=1)
    return Model("sklearn", "sklearn", predict, tabular=True, n_features=n)


class Decode(unittest.TestCase):
    def test_v1_tabular(self):
        x = protocol.v1_input(tabular(), [[1, 2], [3, 4]])
        self.assertEqual(x.shape, (2, 2))
        with self.assertRaisesRegex(BadRequest, "one flat row, send \\[\\[1, 2\\]\\]"):
            protocol.v1_input(tabular(), [1, 2])
        with self.assertRaisesRegex(BadRequest, "each row has 3 features, the model expects 2"):
            protocol.v1_input(tabular(), [[1, 2, 3]])
        with self.assertRaisesRegex(BadRequest, "rectangular"):
            protocol.v1_input(tabular(), [[1, 2], [3]])

    def test_v1_records(self):
        m = tabular(signature={"inputs": [{"type": "double", "name": "a"}, {"type": "double", "name": "b"}]})
        x = protocol.v1_input(m, [{"b": 2, "a": 1}])
        self.assertEqual(x.tolist(), [[1, 2]])
        with self.assertRaisesRegex(BadRequest, "lacks column 'b'"):
            protocol.v1_input(m, [{"a": 1}])
        with self.assertRaisesRegex(BadRequest, "no column-based signature"):
            protocol.v1_input(tabular(), [{"a": 1}])

    def test_v2(self):
        t = {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}
        self.assertEqual(protocol.v2_input(tabular(), [t]).dtype, np.float32)
        for bad, want in (([], "non-empty list"), ([dict(t, shape=[-1])], "non-negative integers"),
                          ([dict(t, datatype="F32")], "unknown datatype"), ([dict(t, shape=[3])], "needs 3 values"),
                          ([{"name": "x", "shape": [1], "datatype": "FP32"}], "missing data")):
            with self.assertRaisesRegex(BadRequest, want):
                protocol.v2_input(tabular(), bad)

    def test_v2_columns_in_signature_order(self):
        m = tabular(signature={"inputs": [{"type": "double", "name": "a"}, {"type": "double", "name": "b"}]})
        x = protocol.v2_input(m, [{"name": "b", "shape": [1], "datatype": "FP64", "data": [2]},
                                  {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}])
        self.assertEqual(x.tolist(), [[1, 2]])


class Encode(unittest.TestCase):
    def test_dumps_nan_is_null(self):
        self.assertEqual(json.loads(protocol.dumps({"p": np.array([1.5, np.nan, np.inf])})), {"p": [1.5, None, None]})

    def test_v2_outputs(self):
        out = protocol.v2_outputs(np.array([[1, 2]], dtype=np.int64))
        self.assertEqual(out, [{"name": "predict", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}])
        out = protocol.v2_outputs(np.array(["a", "b"], dtype=object))
        self.assertEqual(out[0]["datatype"], "BYTES")
        self.assertEqual(out[0]["data"], ["a", "b"])


class Routing(unittest.TestCase):
    def setUp(self):
        self.app = App(tabular(), "iris", "v3")

    def call(self, method, path, body=b""):
        status, body, extra = self.app.handle(method, path, body)
        return status, json.loads(body), extra

    def test_predict(self):
        self.assertEqual(self.call("POST", "/v1/models/iris:predict", b'{"instances": [[1, 2]]}')[:2],
                         (200, {"predictions": [3]}))
        status, out, _ = self.call("POST", "/v2/models/iris/versions/v3/infer",
                                   b'{"id": "r1", "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64",'
                                   b' "data": [1, 2]}]}')
        self.assertEqual(status, 200)
        self.assertEqual((out["model_name"], out["model_version"], out["id"], out["outputs"][0]["data"]),
                         ("iris", "v3", "r1", [3.0]))

    def test_errors(self):
        for method, path, body, status, msg in (
                ("GET", "/v1/models/iris:predict", b"", 405, "use POST for /v1/models/iris:predict"),
                ("POST", "/v1/models/other:predict", b"{}", 404,
                 'model "other" not found (this server serves "iris")'),
                ("GET", "/v2/models/iris/versions/v9", b"", 404,
                 'model "iris" has no version "v9" (this server serves "v3")'),
                ("GET", "/nope", b"", 404, "no such endpoint: /nope"),
                ("POST", "/v1/models/iris:predict", b"", 400, "empty request body; send JSON"),
                ("POST", "/v1/models/iris:predict", b"{", 400, "request body is not valid JSON"),
                ("POST", "/v1/models/iris:predict", b"{}", 400, 'request needs "instances" (or "inputs")')):
            got_status, out, _ = self.call(method, path, body)
            self.assertEqual(got_status, status, path)
            self.assertIn(msg, out["error"])

    def test_health(self):
        self.assertEqual(self.call("GET", "/v2/health/ready")[:2], (200, {"ready": True}))
        self.assertEqual(self.call("GET", "/v2/models/iris")[1],
                         {"name": "iris", "versions": ["v3"], "platform": "sklearn", "inputs": [], "outputs": []})
        self.assertEqual(self.call("GET", "/v1/models/iris")[1], {"name": "iris", "ready": True})

    def test_prediction_failure_is_500(self):
        app = App(Model("python_function", "mlflow", lambda x: 1 / 0), "m", "1")
        status, body, _ = app.handle("POST", "/v1/models/m:predict", b'{"instances": [1]}')
        self.assertEqual(status, 500)
        self.assertIn("prediction failed: ZeroDivisionError", json.loads(body)["error"])


class ClientErrorsAre4xx(unittest.TestCase):
    """Input a model cannot use is the client's error: a 5xx would count
    against a canary in its analysis."""

    def setUp(self):
        self.app = App(numeric(), "m", "v1")

    def call(self, method, path, body=b""):
        status, out, extra = self.app.handle(method, path, body)
        return status, json.loads(out), extra

    def infer(self, req):
        return self.call("POST", "/v2/models/m/infer", json.dumps(req).encode())[:2]

    def test_strings_and_nan(self):
        t = {"name": "x", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}
        status, out = self.infer({"inputs": [t]})
        self.assertEqual(status, 400, out)
        self.assertIn("the model cannot use this input", out["error"])
        status, out = self.call("POST", "/v1/models/m:predict", b'{"instances": [["a", "b"]]}')[:2]
        self.assertEqual(status, 400, out)
        status, out = self.call("POST", "/v1/models/m:predict", b'{"instances": [[NaN, 1]]}')[:2]
        self.assertEqual((status, out["error"]), (400, "the model cannot use this input: Input X contains NaN."))
        # BYTES that are numbers are numbers to the model.
        self.assertEqual(self.infer({"inputs": [dict(t, data=["1", "2"])]})[0], 200)

    def test_model_failure_on_numbers_stays_500(self):
        def broken(x):
            raise ValueError("a bug in the model")
        app = App(Model("sklearn", "sklearn", broken, tabular=True, n_features=2), "m", "v1")
        status, out, _ = app.handle("POST", "/v1/models/m:predict", b'{"instances": [[1, 2]]}')
        self.assertEqual(status, 500, out)

    def test_outputs(self):
        t = {"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}
        status, out = self.infer({"inputs": [t], "outputs": [{"name": "predict"}]})
        self.assertEqual((status, [o["name"] for o in out["outputs"]]), (200, ["predict"]))
        status, out = self.infer({"inputs": [t], "outputs": [{"name": "proba"}]})
        self.assertEqual((status, out["error"]), (400, 'unknown output "proba": this model produces "predict"'))
        status, out = self.infer({"inputs": [t], "outputs": ["predict"]})
        self.assertEqual(status, 400, out)
        status, out = self.infer({"id": 42, "inputs": [t]})
        self.assertEqual((status, out["error"]), (400, '"id" must be a string (OIP: it is returned as given)'))

    def test_explain(self):
        status, out, _ = self.call("POST", "/v1/models/m:explain", b'{"instances": [[1, 2]]}')
        self.assertEqual(status, 501)
        self.assertIn("no explainer", out["error"])
        self.assertEqual(self.call("GET", "/v1/models/m:explain")[0], 405)
        self.assertEqual(self.call("POST", "/v1/models/other:explain", b"{}")[0], 404)
        self.assertEqual(self.call("POST", "/v1/models/m:frobnicate", b"{}")[0], 404)


if __name__ == "__main__":
    unittest.main()


class NestingBomb(unittest.TestCase):
    def test_too_deep_is_a_bad_request(self):
        app = App(tabular(), "m", "v1")
        deep = "[" * 100000 + "]" * 100000
        for path, body in (("/v1/models/m:predict", '{"instances": %s}' % deep),
                           ("/v2/models/m/infer", '{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", '
                                                  '"data": %s}]}' % deep)):
            status, out, _ = app.handle("POST", path, body.encode())
            self.assertEqual(status, 400, path)
            self.assertIn("too deeply", json.loads(out)["error"])
