"""tests/test_openvino.py in a process of its own (see the reason there)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO


def test_openvino_tests_pass_in_their_own_process():
    pytest.importorskip("openvino")
    env = {**os.environ, "KANET_OPENVINO_ISOLATED": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_openvino.py"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1], done.stdout[-1000:]
