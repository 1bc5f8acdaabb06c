"""Which backends exist here, and which one a call uses (the rule is in the README)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
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

def _minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def _built_for(info: ModuleType) -> str:
    cuda = f"CUDA {info.CUDA_VERSION}, GPU archs {info.CUDA_ARCH_LIST}" if info.CUDA_VERSION else "CPU only"
    return f"torch {info.TORCH_VERSION} ({cuda})"


def _load_extension() -> tuple[ModuleType | None, str | None]:
    """fastloss._C, or None and why not. Built against another torch minor version, it is not
    loaded (its C++ ABI is that torch's: loading fails on an undefined symbol, or worse), and a
    warning says what it was built for; the Triton and torch backends still work."""
    try:
        info = importlib.import_module("fastloss._build_info")
    except ImportError:
        info = None
    if info is not None and _minor(info.TORCH_VERSION) != _minor(torch.__version__):
        why = (f"fastloss._C was built for {_built_for(info)}, but this is torch {torch.__version__}: install "
               f"the fastloss build for torch {_minor(torch.__version__)} (its version ends in "
               f"torch{_minor(torch.__version__)}), torch {_minor(info.TORCH_VERSION)} for this build, or {BUILD_HINT}")
        warnings.warn(f"{why}. Until then the Triton and torch backends serve every loss.", RuntimeWarning,
                      stacklevel=3)
        return None, why
    try:
        return importlib.import_module("fastloss._C"), None
    except ImportError as exc:  # not built: the Triton and torch backends still work
        if info is not None and "undefined symbol" in str(exc):
            return None, f"{exc} (built for {_built_for(info)}; {BUILD_HINT})"
        return None, str(exc)


_extension, _extension_error = _load_extension()

_triton_found = importlib.util.find_spec("triton") is not None


def normalize(backend: str | None, what: str = "backend") -> str:
    """A backend name as given to `backend=` or in FASTLOSS_BACKEND: case and surrounding spaces
    do not matter, and None (or an empty variable) means "auto"."""
    if backend is None:
        return "auto"
    value = backend.strip().lower() if isinstance(backend, str) else backend
    if value == "" and what == "FASTLOSS_BACKEND":
        return "auto"
    if value not in BACKENDS:
        raise ValueError(f"fastloss: {what} must be one of {', '.join(map(repr, BACKENDS))} (or None for "
                         f"'auto'), got {backend!r}")
    return value


def _default_backend() -> str:
    return normalize(os.environ.get("FASTLOSS_BACKEND"), "FASTLOSS_BACKEND")


# Read once at import: torch.compile then sees a constant, not an environment lookup.
DEFAULT_BACKEND = _default_backend()


def from_environment() -> bool:
    """Whether FASTLOSS_BACKEND chose a default other than "auto"."""
    return DEFAULT_BACKEND != "auto"


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


def cuda_arch_serves(capability: tuple[int, int], arch_list: str) -> bool:
    """Whether a build for `arch_list` ("8.0;8.6;9.0+PTX") runs on a GPU of compute `capability`:
    machine code for the same major version and a minor one at most the GPU's (an arch-specific
    "9.0a" only on that GPU), or PTX for an arch at most the GPU's. A list fastloss cannot read
    (an arch by name) is trusted."""
    for entry in arch_list.replace(",", ";").replace(" ", ";").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        ptx = entry.endswith("+PTX")
        number = entry.removesuffix("+PTX")
        specific = number[-1:] in ("a", "f")
        try:
            major, minor = (int(v) for v in number.rstrip("af").split("."))
        except ValueError:
            return True
        if (major, minor) == capability or (
                not specific and major == capability[0] and minor <= capability[1]):
            return True
        if ptx and (major, minor) <= capability:
            return True
    return False


_arch_problems: dict[int, str | None] = {}
_arch_warned: set[int | None] = set()


def cuda_arch_problem(device: torch.device) -> str | None:
    """Why fastloss._C's CUDA code cannot run on `device`'s GPU, or None (checked once per GPU)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _arch_problems:
        capability = tuple(torch.cuda.get_device_capability(index))
        archs = _extension.cuda_arch_list
        _arch_problems[index] = None if cuda_arch_serves(capability, archs) else (
            f"fastloss._C holds GPU code for the archs {archs}, and this GPU ({torch.cuda.get_device_name(index)}) "
            f"is sm_{capability[0]}{capability[1]}: rebuild with TORCH_CUDA_ARCH_LIST="
            f"\"{capability[0]}.{capability[1]}\" (or install a wheel built for it), or use backend='triton'")
    return _arch_problems[index]


def check(backend: str | None) -> str:
    """The backend name normalised, after checking what does not depend on the tensors (that
    the name exists and that the backend was built or installed): modules call this when
    constructed. The tensors' device is checked at each call."""
    backend = normalize(backend)
    _check_built(backend, "backend " + repr(backend))
    return backend


def _check_built(backend: str, named: str) -> None:
    if backend == "cpu" and not cpu_built():
        hint = "" if BUILD_HINT in (_extension_error or "") else f"; {BUILD_HINT}"
        raise RuntimeError(f"fastloss: {named} needs the compiled extension fastloss._C, "
                           f"which cannot be loaded here ({_extension_error}){hint}")
    if backend == "cuda" and not cuda_built():
        why = "fastloss._C is not built" if not cpu_built() else "fastloss._C was built without CUDA"
        raise RuntimeError(f"fastloss: {named} is not available: {why}; {CUDA_BUILD_HINT}")
    if backend == "triton" and not _triton_found:
        raise RuntimeError(f"fastloss: {named} needs the triton package: `pip install triton`")


def resolve(backend: str | None, device: torch.device) -> str:
    """The concrete backend ("cpu", "cuda", "triton" or "torch") for a call on `device`."""
    backend = normalize(backend)
    named = "backend " + repr(backend)
    if backend == "auto" and from_environment():
        backend = DEFAULT_BACKEND
        named = (f"backend {backend!r} (from FASTLOSS_BACKEND={os.environ.get('FASTLOSS_BACKEND', backend)}; "
                 f"pass backend= to a call or unset the variable to choose another)")
    kind = device.type
    if backend == "auto":
        if kind == "cuda":
            # (checked outside torch.compile's tracing: the eager calls before it have checked)
            if cuda_built() and (torch.compiler.is_compiling() or cuda_arch_problem(device) is None):
                return "cuda"
            if cuda_built() and device.index not in _arch_warned:
                _arch_warned.add(device.index)
                warnings.warn(f"fastloss: {cuda_arch_problem(device)}; the Triton backend runs instead",
                              RuntimeWarning, stacklevel=4)
            return "triton" if _triton_found else "torch"
        if kind == "cpu" and cpu_built():
            return "cpu"
        return "torch"
    _check_built(backend, named)
    if backend == "cpu":
        if kind != "cpu":
            raise ValueError(f"fastloss: {named} takes CPU tensors, got tensors on {device}")
    elif backend == "cuda":
        if kind != "cuda":
            raise ValueError(f"fastloss: {named} takes CUDA tensors, got tensors on {device}")
        if not torch.compiler.is_compiling() and cuda_arch_problem(device) is not None:
            raise RuntimeError(f"fastloss: {named} cannot run here: {cuda_arch_problem(device)}")
    elif backend == "triton":
        if kind == "cpu" and not triton_interpreting():
            raise ValueError(f"fastloss: {named} runs CPU tensors only under TRITON_INTERPRET=1 "
                             "(set before fastloss is imported); use CUDA tensors or backend 'cpu'")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"fastloss: {named} takes CUDA tensors, got tensors on {device}")
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
