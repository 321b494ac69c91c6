"""Reading an MLflow model's MLmodel file (YAML, with Debian's python3-yaml)."""

import json
import os

from .errors import LoadError, MissingPackage


def parse(text):
    """Parses MLmodel text into a dict (yaml.safe_load: no tags, no objects)."""
    try:
        import yaml
    except ModuleNotFoundError as e:
        raise MissingPackage(e.name or "yaml")
    try:
        doc = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - any YAML error
        raise LoadError("cannot parse MLmodel: %s" % str(e).replace("\n", " "))
    if not isinstance(doc, dict):
        raise LoadError("MLmodel is not a YAML mapping")
    return doc


def read(model_dir):
    """Reads and parses model_dir/MLmodel."""
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
    return parse(text)


def signature(meta):
    """The model signature as {"inputs": [...], "outputs": [...]}; MLflow
    stores each as a JSON string inside the YAML."""
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
