"""Which backends exist here, and which one a call uses (the rule is in the README)."""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

import torch

BACKENDS = ("auto", "cpu", "cuda", "triton", "torch")

BUILD_HINT = (
    "build it from a source checkout with `pip install --no-build-isolation -e .` "
    "(needs a C++ compiler and torch installed)"
)
CUDA_BUILD_HINT = (
    "rebuild on a machine with the CUDA toolkit: "
    "`CUDA_HOME=/path/to/cuda FASTLOSS_CUDA=1 pip install --no-build-isolation -e .`"
)

_extension: ModuleType | None = None
_extension_error: str | None = None
try:
    _extension = importlib.import_module("fastloss._C")
except ImportError as exc:  # not built: the Triton and torch backends still work
    _extension_error = str(exc)

_triton_found = importlib.util.find_spec("triton") is not None


def _default_backend() -> str:
    value = os.environ.get("FASTLOSS_BACKEND", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"fastloss: FASTLOSS_BACKEND must be one of {', '.join(BACKENDS)}, got {value!r}")
    return value


# Read once at import: torch.compile then sees a constant, not an environment lookup.
DEFAULT_BACKEND = _default_backend()


def extension() -> ModuleType | None:
    """The compiled module fastloss._C, or None when it was not built."""
    return _extension


def extension_error() -> str | None:
    return _extension_error


def cpu_built() -> bool:
    return _extension is not None


def cuda_built() -> bool:
    return _extension is not None and bool(_extension.cuda_compiled)


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_found() -> bool:
    return _triton_found


def resolve(backend: str | None, device: torch.device) -> str:
    """The concrete backend ("cpu", "cuda", "triton" or "torch") for a call on `device`."""
    if backend is None:
        backend = "auto"
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"fastloss: backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "auto":
        backend = DEFAULT_BACKEND
    kind = device.type
    if backend == "auto":
        if kind == "cuda":
            if cuda_built():
                return "cuda"
            return "triton" if _triton_found else "torch"
        if kind == "cpu" and cpu_built():
            return "cpu"
        return "torch"
    if backend == "cpu":
        if not cpu_built():
            raise RuntimeError(f"fastloss: backend 'cpu' needs the compiled extension fastloss._C, "
                               f"which is not built here ({_extension_error}); {BUILD_HINT}")
        if kind != "cpu":
            raise ValueError(f"fastloss: backend 'cpu' takes CPU tensors, got tensors on {device}")
    elif backend == "cuda":
        if not cuda_built():
            why = "fastloss._C is not built" if not cpu_built() else "fastloss._C was built without CUDA"
            raise RuntimeError(f"fastloss: backend 'cuda' is not available: {why}; {CUDA_BUILD_HINT}")
        if kind != "cuda":
            raise ValueError(f"fastloss: backend 'cuda' takes CUDA tensors, got tensors on {device}")
    elif backend == "triton":
        if not _triton_found:
            raise RuntimeError("fastloss: backend 'triton' needs the triton package: `pip install triton`")
        if kind == "cpu" and not triton_interpreting():
            raise ValueError("fastloss: backend 'triton' runs CPU tensors only under TRITON_INTERPRET=1 "
                             "(set before fastloss is imported); use CUDA tensors or backend 'cpu'")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"fastloss: backend 'triton' takes CUDA tensors, got tensors on {device}")
    return backend


def available() -> dict[str, bool]:
    """Which backends can run here, by name."""
    gpu = torch.cuda.is_available()
    return {
        "cpu": cpu_built(),
        "cuda": cuda_built() and gpu,
        "triton": _triton_found and (gpu or triton_interpreting()),
        "torch": True,
    }
