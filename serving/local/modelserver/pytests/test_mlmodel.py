"""merlin_modelserver.mlmodel: MLmodel through PyYAML's safe_load."""

import os
import tempfile
import unittest

from merlin_modelserver import mlmodel
from merlin_modelserver.errors import LoadError

MLMODEL = """\
artifact_path: model
flavors:
  python_function:
    env:
      conda: conda.yaml
    loader_module: mlflow.sklearn
    model_path: model.pkl
    predict_fn: predict
    python_version: 3.11.2
  sklearn:
    code: null
    pickled_model: model.pkl
    serialization_format: cloudpickle
    sklearn_version: 1.2.1
mlflow_version: 2.12.2
model_uuid: 0a1b
signature:
  inputs: '[{"type": "double", "name": "sepal length (cm)", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]'
  params: null
utc_time_created: '2025-01-01 00:00:00.000000'
"""


class Parse(unittest.TestCase):
    def test_mlmodel(self):
        doc = mlmodel.parse(MLMODEL)
        self.assertEqual(doc["flavors"]["sklearn"]["sklearn_version"], "1.2.1")
        self.assertIsNone(doc["flavors"]["sklearn"]["code"])
        self.assertEqual(doc["flavors"]["python_function"]["python_version"], "3.11.2")
        self.assertEqual(doc["utc_time_created"], "2025-01-01 00:00:00.000000")

    def test_signature(self):
        sig = mlmodel.signature(mlmodel.parse(MLMODEL))
        self.assertEqual(sig["inputs"], [{"type": "double", "name": "sepal length (cm)", "required": True}])
        self.assertEqual(sig["outputs"][0]["tensor-spec"]["shape"], [-1])
        self.assertEqual(mlmodel.signature({}), {})
        self.assertEqual(mlmodel.signature({"signature": {"inputs": "not json"}}), {})

    def test_errors_are_one_line(self):
        for text, want in (("flavors: [", "cannot parse MLmodel: "), ("- a\n- b\n", "not a YAML mapping"),
                           ("", "not a YAML mapping"),
                           ("x: !!python/object/apply:os.system ['true']\n", "cannot parse MLmodel: ")):
            with self.assertRaises(LoadError) as cm:
                mlmodel.parse(text)
            self.assertIn(want, str(cm.exception))
            self.assertNotIn("\n", str(cm.exception))


class Read(unittest.TestCase):
    def test_read(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaisesRegex(LoadError, "MLmodel not found in "):
                mlmodel.read(d)
            with open(os.path.join(d, "MLmodel"), "w") as f:
                f.write(MLMODEL)
            self.assertEqual(mlmodel.read(d), mlmodel.parse(MLMODEL))
            with self.assertRaisesRegex(LoadError, "model directory .* not found"):
                mlmodel.read(os.path.join(d, "nope"))


if __name__ == "__main__":
    unittest.main()
