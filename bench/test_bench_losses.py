"""pytest-benchmark suite: each loss's forward+backward, fastloss's backends against torch
eager and torch.compile, plus the device copy that sets the bandwidth ceiling.

    .venv/bin/python -m pytest bench/test_bench_losses.py
(bench/report.py runs the same cases and prints the table with ratios.)
"""

import pytest
import torch

import cases

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SIZES = [1 << 20, 1 << 25]
PROVIDERS = cases.providers(DEVICE)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"2^{n.bit_length() - 1}")
@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("loss", cases.LOSSES)
def test_forward_backward(benchmark, loss, provider, n):
    case = cases.make_case(loss, n, torch.float32, DEVICE)
    step = PROVIDERS[provider](case)
    step()  # warm-up (and compilation)

    def run():
        step()
        _sync()

    benchmark.extra_info["bytes"] = case.nbytes
    benchmark(run)


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"2^{n.bit_length() - 1}")
def test_copy_ceiling(benchmark, n):
    copy, nbytes = cases.copy_step(n, torch.float32, DEVICE)

    def run():
        copy()
        _sync()

    benchmark.extra_info["bytes"] = nbytes
    benchmark(run)
