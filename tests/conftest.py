"""Test set-up: Triton runs under its interpreter on CPU tensors where no GPU is present.

TRITON_INTERPRET must be set before any Triton kernel is defined, so before fastloss.kernels
is imported; fastloss imports it lazily, and this file runs first.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fastloss  # noqa: E402  (after the environment is set)
from fastloss import _backend  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip)


def backend_params():
    """(backend, device) pairs to test: every backend that can run on this machine. The C++
    CPU backend is required (a missing build fails, never skips)."""
    params = [pytest.param(("cpu", "cpu"), id="cpu"), pytest.param(("torch", "cpu"), id="torch")]
    if _backend.triton_interpreting():
        params.append(pytest.param(("triton", "cpu"), id="triton-interpreted"))
    params += [
        pytest.param(("cuda", "cuda"), id="cuda", marks=pytest.mark.cuda),
        pytest.param(("triton", "cuda"), id="triton-cuda", marks=pytest.mark.cuda),
    ]
    return params


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0x5EED)
    yield


@pytest.fixture(scope="session", autouse=True)
def _extension_is_built():
    assert _backend.cpu_built(), f"fastloss._C is not built: {_backend.extension_error()}"
