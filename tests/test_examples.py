"""The examples run, and their drop-in comparisons hold."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args, "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_autoencoder_curves_agree():
    pytest.importorskip("sklearn", reason="the example needs scikit-learn (installed by `make setup`)")
    out = run_example("autoencoder.py", "--epochs", "6")
    gap = float(re.search(r"curves agree to ([0-9.e+-]+)", out).group(1))
    assert gap < 1e-4, out
    assert out.count("largest relative gap") == 2
