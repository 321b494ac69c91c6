"""merlin_modelserver.config: the command line and thread defaults."""

import io
import os
import unittest
from contextlib import redirect_stderr

from merlin_modelserver import config
from merlin_modelserver.errors import EXIT_USAGE

BASE = ["--model-dir", "/m", "--name", "iris", "--version", "v1"]


class ParseArgs(unittest.TestCase):
    def test_fd(self):
        a = config.parse_args(BASE + ["--fd", "3", "--workers", "2", "--orphan-timeout", "1.5"])
        self.assertEqual((a.model_dir, a.name, a.version, a.fd, a.port, a.workers, a.orphan_timeout),
                         ("/m", "iris", "v1", 3, None, 2, 1.5))

    def test_bundle(self):
        a = config.parse_args(["--model-dir", "/proc/self/fd/5", "--bundle", "/state/bundles/b1"] + BASE[2:] + ["--fd", "3"])
        self.assertEqual((a.model_dir, a.bundle), ("/proc/self/fd/5", "/state/bundles/b1"))
        self.assertIsNone(config.parse_args(BASE + ["--fd", "3"]).bundle)

    def test_defaults(self):
        a = config.parse_args(BASE + ["--port", "8080"])
        self.assertEqual((a.host, a.port, a.workers, a.orphan_timeout), ("127.0.0.1", 8080, 1, 300.0))

    def test_workers_zero_means_cpus(self):
        a = config.parse_args(BASE + ["--fd", "3", "--workers", "0"])
        self.assertEqual(a.workers, os.cpu_count() or 1)

    def bad(self, argv, want):
        err = io.StringIO()
        with redirect_stderr(err), self.assertRaises(SystemExit) as cm:
            config.parse_args(argv)
        self.assertEqual(cm.exception.code, EXIT_USAGE)
        self.assertTrue(err.getvalue().startswith("merlin: bad arguments: "), err.getvalue())
        self.assertIn(want, err.getvalue())
        self.assertEqual(err.getvalue().count("\n"), 1)

    def test_bad(self):
        self.bad(BASE, "exactly one of --fd or --port")
        self.bad(BASE + ["--fd", "3", "--port", "1"], "exactly one of --fd or --port")
        self.bad(BASE + ["--fd", "3", "--workers", "-1"], "--workers must be >= 0")
        self.bad(["--fd", "3"], "required")
        self.bad(BASE + ["--fd", "x"], "invalid int value")


class ThreadDefaults(unittest.TestCase):
    def test_set_unless_chosen(self):
        env = {"OMP_NUM_THREADS": "4"}
        config.set_thread_defaults(env)
        self.assertEqual(env, {"OMP_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})


if __name__ == "__main__":
    unittest.main()
