"""Bad input gets a clear error that names the argument and what was expected."""

import os
import re
import subprocess
import sys
import types
import warnings

import pytest
import torch

import fastloss
from fastloss import _backend


def test_dtypes_torch_rejects_raise_torch_error_naming_the_call():
    """Integer and bool operands go to torch's own function: where torch refuses them, the
    error is of torch's type, with torch's words and fastloss's call named."""
    x = torch.ones(3, dtype=torch.int64)
    with pytest.raises(RuntimeError, match=r"fastloss\.mse_loss \(input: int64 \(3,\), target: int64 \(3,\)\).*Long"):
        fastloss.mse_loss(x, x)
    b = torch.ones(3, dtype=torch.bool)
    with pytest.raises(RuntimeError, match=r"fastloss\.mse_loss \(input: bool"):
        fastloss.mse_loss(b, b)
    with pytest.raises(RuntimeError, match=r"binary_cross_entropy_with_logits.*target: int64.*can't be cast"):
        fastloss.binary_cross_entropy_with_logits(torch.randn(3), x)


def test_dtypes_torch_accepts_give_torch_results():
    c = torch.randn(3, dtype=torch.complex64)
    torch.testing.assert_close(fastloss.l1_loss(c, c * 2), torch.nn.functional.l1_loss(c, c * 2))
    i = torch.arange(12).reshape(3, 4)
    torch.testing.assert_close(fastloss.triplet_margin_loss(i, i + 1, i - 2), torch.nn.functional.triplet_margin_loss(i, i + 1, i - 2))


def test_mismatched_devices():
    with pytest.raises(RuntimeError, match=r"target must be on the same device as input \(cpu\), got meta"):
        fastloss.mse_loss(torch.randn(3), torch.randn(3, device="meta"))
    with pytest.raises(RuntimeError, match="weight must be on the same device"):
        fastloss.mse_loss(torch.randn(3), torch.randn(3), weight=torch.ones(3, device="meta"))


def test_shapes_that_do_not_broadcast():
    with pytest.warns(UserWarning):
        with pytest.raises(RuntimeError, match=r"fastloss\.mse_loss \(input: float32 \(3,\), target: float32 \(4,\)\): "
                                               r"The size of tensor a \(3\) must match the size of tensor b \(4\)"):
            fastloss.mse_loss(torch.randn(3), torch.randn(4))


def test_weight_of_wrong_size():
    with pytest.raises(ValueError, match=r"weight must have input's size \(3,\), got \(1,\)"):
        fastloss.mse_loss(torch.randn(3), torch.randn(3), weight=torch.ones(1))


def test_unknown_reduction():
    with pytest.raises(ValueError, match=r"avg is not a valid value for reduction: expected 'none', 'mean' or 'sum', got 'avg'"):
        fastloss.mse_loss(torch.randn(3), torch.randn(3), reduction="avg")


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'metal'"):
        fastloss.mse_loss(torch.randn(3), torch.randn(3), backend="metal")


def test_non_tensor_argument():
    with pytest.raises(TypeError, match="target must be a torch.Tensor, got list"):
        fastloss.mse_loss(torch.randn(3), [1.0, 2.0, 3.0])


def test_cuda_backend_with_cpu_tensors(monkeypatch):
    # the rule is Python's (fastloss/_backend.py): it holds for a CUDA build, whatever this one is
    monkeypatch.setattr(_backend, "cuda_built", lambda: True)
    with pytest.raises(ValueError, match="backend 'cuda' takes CUDA tensors, got tensors on cpu"):
        fastloss.mse_loss(torch.randn(3), torch.randn(3), backend="cuda")


@pytest.mark.parametrize("cuda_built,triton_found,expected", [(True, True, "cuda"), (True, False, "cuda"),
                                                              (False, True, "triton"), (False, False, "torch")])
def test_auto_backend_for_cuda_tensors(monkeypatch, cuda_built, triton_found, expected):
    """The choice for CUDA tensors, decided without a GPU: the CUDA kernels where built, else
    Triton where installed, else the plain formula."""
    monkeypatch.setattr(_backend, "cuda_built", lambda: cuda_built)
    monkeypatch.setattr(_backend, "cuda_arch_problem", lambda device: None)  # a GPU the build serves
    monkeypatch.setattr(_backend, "_triton_found", triton_found)
    monkeypatch.setattr(_backend, "DEFAULT_BACKEND", "auto")
    assert _backend.resolve("auto", torch.device("cuda")) == expected
    assert _backend.resolve(None, torch.device("cuda", 1)) == expected


def test_explicit_backends_for_each_device(monkeypatch):
    monkeypatch.setattr(_backend, "cuda_built", lambda: True)
    monkeypatch.setattr(_backend, "cuda_arch_problem", lambda device: None)
    monkeypatch.setattr(_backend, "_triton_found", True)
    cuda, cpu, meta = torch.device("cuda"), torch.device("cpu"), torch.device("meta")
    assert _backend.resolve("cuda", cuda) == "cuda"
    assert _backend.resolve("triton", cuda) == "triton"
    assert _backend.resolve("torch", cuda) == "torch"
    assert _backend.resolve("cpu", cpu) == "cpu"
    assert _backend.resolve("auto", cpu) == "cpu"
    assert _backend.resolve("auto", meta) == "torch"
    with pytest.raises(ValueError, match="backend 'cpu' takes CPU tensors, got tensors on cuda"):
        _backend.resolve("cpu", cuda)
    with pytest.raises(ValueError, match="backend 'triton' takes CUDA tensors, got tensors on meta"):
        _backend.resolve("triton", meta)
    monkeypatch.setattr(_backend, "_triton_found", False)
    with pytest.raises(RuntimeError, match=r"backend 'triton' needs the triton package: `pip install triton`"):
        _backend.resolve("triton", cuda)
    monkeypatch.setattr(_backend, "DEFAULT_BACKEND", "torch")
    assert _backend.resolve("auto", cpu) == "torch" and _backend.resolve("cpu", cpu) == "cpu"


@pytest.mark.parametrize("capability,arch_list,serves", [
    ((8, 0), "8.0;9.0+PTX", True), ((8, 6), "8.0;9.0+PTX", True), ((8, 9), "8.0;9.0+PTX", True),
    ((10, 0), "8.0;9.0+PTX", True), ((12, 0), "8.0 8.6 9.0+PTX", True), ((7, 5), "8.0;9.0+PTX", False),
    ((10, 0), "8.0;9.0", False), ((8, 0), "8.6", False), ((9, 0), "9.0a", True), ((10, 0), "9.0a", False),
    ((9, 0), "Hopper", True)])
def test_which_gpus_a_build_serves(capability, arch_list, serves):
    """Machine code runs on the same major version at an equal or newer minor one; PTX on any newer GPU."""
    assert _backend.cuda_arch_serves(capability, arch_list) is serves


def _a_gpu(monkeypatch, capability, name):
    """A CUDA build for sm_80 and sm_90 (+PTX) on a machine whose GPU 0 is `name`, without a GPU."""
    monkeypatch.setattr(_backend, "cuda_built", lambda: True)
    monkeypatch.setattr(_backend, "_extension", types.SimpleNamespace(cuda_arch_list="8.0;9.0+PTX"))
    monkeypatch.setattr(_backend, "_arch_problems", {})
    monkeypatch.setattr(_backend, "_arch_warned", set())
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(_backend, "_triton_found", True)
    monkeypatch.setattr(_backend, "DEFAULT_BACKEND", "auto")


def test_a_gpu_the_build_does_not_serve(monkeypatch):
    """No CUDA "no kernel image" failure at the first call: backend 'cuda' says what the build
    holds, what the GPU is and what to do; 'auto' warns once and takes Triton."""
    _a_gpu(monkeypatch, (7, 5), "Tesla T4")
    gpu = torch.device("cuda", 0)
    with pytest.raises(RuntimeError, match=r"GPU code for the archs 8\.0;9\.0\+PTX, and this GPU \(Tesla T4\) "
                                           r"is sm_75: rebuild with TORCH_CUDA_ARCH_LIST=\"7\.5\".*backend='triton'"):
        _backend.resolve("cuda", gpu)
    with pytest.warns(RuntimeWarning, match="sm_75.*the Triton backend runs instead"):
        assert _backend.resolve("auto", gpu) == "triton"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once is enough
        assert _backend.resolve("auto", gpu) == "triton"


def test_a_gpu_the_build_serves(monkeypatch):
    _a_gpu(monkeypatch, (8, 6), "NVIDIA A10")
    assert _backend.resolve("cuda", torch.device("cuda", 0)) == "cuda"
    assert _backend.resolve("auto", torch.device("cuda")) == "cuda"


def test_an_extension_built_for_another_torch(monkeypatch):
    """Not loaded (its ABI is another torch's): a warning says what it was built for, what is
    installed and what to do; the cpu backend's error repeats it."""
    info = types.ModuleType("fastloss._build_info")
    info.TORCH_VERSION, info.CUDA_VERSION, info.CUDA_ARCH_LIST = "2.11.0+cu130", "13.0", "8.0;9.0+PTX"
    monkeypatch.setitem(sys.modules, "fastloss._build_info", info)
    minor = ".".join(torch.__version__.split(".")[:2])
    with pytest.warns(RuntimeWarning, match=r"built for torch 2\.11\.0\+cu130 \(CUDA 13\.0, GPU archs 8\.0;9\.0\+PTX\), "
                                            rf"but this is torch {re.escape(torch.__version__)}: install the fastloss "
                                            rf"build for torch {minor}"):
        extension, why = _backend._load_extension()
    assert extension is None
    monkeypatch.setattr(_backend, "_extension", None)
    monkeypatch.setattr(_backend, "_extension_error", why)
    with pytest.raises(RuntimeError, match="built for torch 2.11.0"):
        fastloss.mse_loss(torch.randn(3), torch.randn(3), backend="cpu")
    assert fastloss.mse_loss(torch.ones(3), torch.zeros(3)).item() == 1.0  # the torch backend serves
    info.TORCH_VERSION = torch.__version__  # the same minor version: loaded
    assert _backend._load_extension()[0] is not None


def test_available_backends(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert fastloss.available_backends() == {"cpu": True, "cuda": False, "triton": _backend.triton_found(),
                                             "torch": True}
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert fastloss.available_backends()["triton"] is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_backend, "cuda_built", lambda: True)
    assert fastloss.available_backends() == {"cpu": True, "cuda": True, "triton": _backend.triton_found(),
                                             "torch": True}


def test_backend_not_built_says_how_to_build(monkeypatch):
    monkeypatch.setattr(_backend, "_extension", None)
    monkeypatch.setattr(_backend, "_extension_error", "No module named 'fastloss._C'")
    with pytest.raises(RuntimeError, match=r"backend 'cpu' needs the compiled extension.*pip install --no-build-isolation -e \."):
        fastloss.mse_loss(torch.randn(3), torch.randn(3), backend="cpu")
    with pytest.raises(RuntimeError, match=r"backend 'cuda' is not available.*FASTLOSS_CUDA=1"):
        fastloss.mse_loss(torch.randn(3), torch.randn(3), backend="cuda")
    # auto falls back to the plain formula and still computes the right value
    x, t = torch.randn(5), torch.randn(5)
    torch.testing.assert_close(fastloss.mse_loss(x, t), torch.nn.functional.mse_loss(x, t))


def test_triton_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="backend 'triton' runs CPU tensors only under TRITON_INTERPRET=1"):
        fastloss.mse_loss(torch.randn(3), torch.randn(3), backend="triton")


def test_bad_environment_backend_is_reported():
    code = "import fastloss"
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "FASTLOSS_BACKEND": "gpu"},
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "FASTLOSS_BACKEND must be one of" in proc.stderr


def test_environment_backend_sets_the_default():
    code = ("import torch, fastloss; from fastloss import _backend; "
            "print(_backend.resolve('auto', torch.device('cpu')))")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "FASTLOSS_BACKEND": "torch"},
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "torch"


def test_op_level_checks():
    x = torch.randn(4)
    with pytest.raises(RuntimeError, match="target must have input's dtype"):
        torch.ops.fastloss.pointwise_loss(x, x.double(), None, None, 0, 1, 0.0, False, False, False)
    with pytest.raises(RuntimeError, match="target must have input's shape"):
        torch.ops.fastloss.pointwise_loss(x, torch.randn(5), None, None, 0, 1, 0.0, False, False, False)
    with pytest.raises(RuntimeError, match="must be contiguous"):
        torch.ops.fastloss.pointwise_loss(torch.randn(4, 2).t(), torch.randn(2, 4), None, None, 0, 1, 0.0, False, False, False)
    with pytest.raises(RuntimeError, match="unknown pointwise loss id 99"):
        torch.ops.fastloss.pointwise_loss(x, x, None, None, 99, 1, 0.0, False, False, False)
    with pytest.raises(RuntimeError, match=r"pos_weight must have input's numel 4 or a divisor of it"):
        torch.ops.fastloss.pointwise_loss(x, x, None, torch.ones(3), 4, 1, 0.0, False, False, False)
    with pytest.raises(RuntimeError, match="grad_output must be 0-d or broadcast to the gradient's shape"):
        torch.ops.fastloss.scale_grad_(x, torch.randn(3))


def test_python_m_fastloss_reports_backends():
    proc = subprocess.run([sys.executable, "-m", "fastloss"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "extension fastloss._C: built" in proc.stdout
    assert "backends that run here: cpu" in proc.stdout


@pytest.mark.parametrize("spelling", ["torch", "TORCH", " Torch ", None, "auto", "AUTO"])
def test_backend_argument_takes_the_environment_variables_spellings(spelling):
    x, t = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(fastloss.mse_loss(x, t, backend=spelling), torch.nn.functional.mse_loss(x, t),
                               rtol=1e-12, atol=0)
    expected = "torch" if spelling not in (None, "auto", "AUTO") else _backend.resolve("auto", x.device)
    assert _backend.resolve(spelling, x.device) == expected
    code = "import torch; from fastloss import _backend; print(_backend.resolve('auto', torch.device('cpu')))"
    env = {**os.environ, "FASTLOSS_BACKEND": spelling if spelling is not None else ""}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


def test_modules_check_their_backend_when_built_and_show_it(monkeypatch):
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'gpu'"):
        fastloss.MSELoss(backend="gpu")  # before any call
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'metal'"):
        fastloss.InfoNCELoss(backend="metal")
    monkeypatch.setattr(_backend, "cuda_built", lambda: False)
    with pytest.raises(RuntimeError, match="backend 'cuda' is not available"):
        fastloss.ContrastiveLoss(backend="cuda")
    assert repr(fastloss.MSELoss(backend="TORCH")) == "MSELoss(backend='torch')"
    assert repr(fastloss.MaskedMSELoss(backend=None)) == "MaskedMSELoss(norm_target=False, eps=1e-06, backend='auto')"
    module = fastloss.BatchContrastiveLoss()
    assert repr(module).endswith("reduction='avg_nonzero', backend='auto')")
    with pytest.raises(ValueError, match="got 'tpu'"):
        module.backend = "tpu"  # the attribute is checked too
    assert module.backend == "auto"


def test_an_error_the_environment_variable_caused_says_so(monkeypatch):
    monkeypatch.setattr(_backend, "cuda_built", lambda: True)
    monkeypatch.setattr(_backend, "DEFAULT_BACKEND", "cuda")
    monkeypatch.setenv("FASTLOSS_BACKEND", "CUDA")
    with pytest.raises(ValueError, match=r"backend 'cuda' \(from FASTLOSS_BACKEND=CUDA; pass backend= .*\) takes "
                                         r"CUDA tensors, got tensors on cpu"):
        fastloss.mse_loss(torch.randn(3), torch.randn(3))
    with pytest.raises(ValueError, match=r"^fastloss: backend 'cuda' takes CUDA tensors"):  # an argument: no mention
        fastloss.mse_loss(torch.randn(3), torch.randn(3), backend="cuda")


def test_python_m_fastloss_names_the_environment_variable_only_when_set():
    env = {k: v for k, v in os.environ.items() if k != "FASTLOSS_BACKEND"}
    plain = subprocess.run([sys.executable, "-m", "fastloss"], env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert "default backend: auto\n" in plain.stdout and "FASTLOSS_BACKEND" not in plain.stdout, plain.stdout
    env["FASTLOSS_BACKEND"] = "Torch"
    chosen = subprocess.run([sys.executable, "-m", "fastloss"], env=env, capture_output=True, text=True, timeout=120)
    assert "default backend: torch (from FASTLOSS_BACKEND)" in chosen.stdout, chosen.stdout
