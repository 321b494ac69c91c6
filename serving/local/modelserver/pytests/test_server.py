"""merlin_modelserver.server: HTTP framing, one write per batch of responses."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

from merlin_modelserver import server
from merlin_modelserver.loaders.common import Model
from merlin_modelserver.protocol import App


class FakeTransport:
    def __init__(self):
        self.writes = []
        self.closed = False

    def write(self, data):
        self.writes.append(bytes(data))

    def close(self):
        self.closed = True

    def get_extra_info(self, name):
        return None

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


class FakeServer:
    def __init__(self):
        model = Model("sklearn", "sklearn_sklearn", lambda x: np.asarray(x).sum(axis=1), tabular=True, n_features=2)
        self.app = App(model, "iris", "1")
        self.conns = set()
        self.stopping = False

    def conn_closed(self):
        pass


def predict(body=b'{"instances": [[1, 2]]}', extra=b""):
    return (b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n"
            % (len(body), extra)) + body


def responses(data):
    """Splits concatenated HTTP responses into (status line, headers, JSON body)."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = dict(line.split(b": ", 1) for line in lines[1:])
        n = int(headers.get(b"Content-Length", b"0"))
        body = rest[:n]
        out.append((lines[0].decode(), headers, json.loads(body) if body else None))
        data = rest[n:]
    return out


class Connection(unittest.TestCase):
    def setUp(self):
        self.server = FakeServer()
        self.conn = server.HTTPConnection(self.server)
        self.transport = FakeTransport()
        self.conn.connection_made(self.transport)

    def test_one_write_per_response(self):
        self.conn.data_received(predict())
        self.assertEqual(len(self.transport.writes), 1)
        (status, headers, body), = responses(self.transport.writes[0])
        self.assertEqual(status, "HTTP/1.1 200 OK")
        self.assertEqual(headers[b"Content-Type"], b"application/json")
        self.assertEqual(body, {"predictions": [3]})

    def test_pipelined_requests_one_write(self):
        self.conn.data_received(predict() + predict(b'{"instances": [[2, 2]]}') + predict())
        self.assertEqual(len(self.transport.writes), 1)
        self.assertEqual([r[2]["predictions"] for r in responses(self.transport.writes[0])], [[3], [4], [3]])

    def test_split_request(self):
        req = predict()
        for i in range(len(req)):
            self.conn.data_received(req[i:i + 1])
        self.assertEqual(len(self.transport.writes), 1)
        self.assertEqual(responses(self.transport.writes[0])[0][2], {"predictions": [3]})
        self.assertFalse(self.transport.closed)

    def test_chunked(self):
        body = b'{"instances": [[1, 2]]}'
        req = (b"POST /v1/models/iris:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        self.conn.data_received(req)
        self.assertEqual(responses(self.transport.writes[0])[0][2], {"predictions": [3]})

    def test_connection_close(self):
        self.conn.data_received(predict(extra=b"Connection: close\r\n"))
        (status, headers, _), = responses(self.transport.writes[0])
        self.assertEqual(headers[b"Connection"], b"close")
        self.assertTrue(self.transport.closed)

    def test_malformed_closes(self):
        self.conn.data_received(b"NONSENSE\r\n\r\n")
        (status, _, body), = responses(self.transport.writes[0])
        self.assertEqual(status, "HTTP/1.1 400 Bad Request")
        self.assertEqual(body, {"error": "malformed request line"})
        self.assertTrue(self.transport.closed)

    def test_body_too_large(self):
        self.conn.data_received(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (server.MAX_BODY_BYTES + 1))
        self.assertTrue(responses(self.transport.writes[0])[0][0].startswith("HTTP/1.1 413"))


class Response(unittest.TestCase):
    def test_framing(self):
        self.assertEqual(server.response(404, b'{"error": "x"}', close=True, extra=b"Allow: GET\r\n"),
                         b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nAllow: GET\r\n"
                         b"Connection: close\r\nContent-Length: 14\r\n\r\n{\"error\": \"x\"}")


class Entry(unittest.TestCase):
    """The ways to start the package exit 2 on bad arguments, with one line."""

    def run_server(self, *args, cwd=None):
        env = dict(os.environ, PYTHONPATH=os.path.dirname(PKG))
        return subprocess.run([sys.executable, "-B", *args], capture_output=True, text=True, env=env, cwd=cwd,
                              timeout=60)

    def check(self, r):
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertTrue(r.stderr.startswith("merlin: bad arguments: "), r.stderr)

    def test_directory(self):
        self.check(self.run_server(PKG, "--name", "x"))

    def test_main_file(self):
        self.check(self.run_server(os.path.join(PKG, "__main__.py"), "--name", "x"))

    def test_module(self):
        self.check(self.run_server("-m", "merlin_modelserver", "--name", "x"))

    def test_package_modules_are_not_top_level(self):
        # Run as a directory, the package must not leave its own directory on
        # sys.path, where its modules (config, server, ...) would shadow a
        # model's modules of the same names. A loader_module reports it.
        with tempfile.TemporaryDirectory() as model:
            os.mkdir(os.path.join(model, "code"))
            with open(os.path.join(model, "MLmodel"), "w") as f:
                f.write("flavors:\n  python_function:\n    loader_module: probe\n    code: code\n")
            with open(os.path.join(model, "code", "probe.py"), "w") as f:
                f.write("import sys\n"
                        "def _load_pyfunc(path):\n"
                        "    raise RuntimeError('on sys.path: %r' % [p for p in sys.path\n"
                        "                       if p.rstrip('/').endswith('merlin_modelserver')])\n")
            r = subprocess.run([sys.executable, "-B", PKG, "--model-dir", model, "--name", "m", "--version", "1",
                                "--port", "0"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("RuntimeError: on sys.path: []", r.stderr)
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)


PKG = os.path.dirname(os.path.abspath(server.__file__))

if __name__ == "__main__":
    unittest.main()
