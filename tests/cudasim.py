"""Run a test script on Numba's CUDA simulator, for the numba.cuda twins of the CPU kernels.

``NUMBA_ENABLE_CUDASIM=1`` must be set before ``numba.cuda`` is first imported, which the test process
has long done: the script runs in a fresh interpreter. It prints its figures; the test checks them.
"""
from __future__ import annotations

import os
import subprocess
import sys


def simulated_output(script: str, timeout: float = 300) -> list[str]:
    """The whitespace-separated words ``script`` printed under the CUDA simulator (asserts it succeeded)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()
