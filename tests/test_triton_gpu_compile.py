"""Every Triton kernel that kernels/*.py launches compiles for sm_90 (the H200 the project
validates on), with no GPU present.

Why: without a GPU the suite runs the kernels under TRITON_INTERPRET=1, which never runs
Triton's GPU front end, so code the GPU compiler rejects (a module global such as
`INF: tl.constexpr = float("inf")` read inside a kernel: "Cannot access global variable")
passes every other test here.

How: conftest.py has already set TRITON_INTERPRET=1, under which triton.jit makes
InterpretedFunctions, and running them patches triton.language in place; so the compiles run
in a child process (this file run as a script) with TRITON_INTERPRET removed and a fresh
TRITON_CACHE_DIR. The child loads this checkout's kernels/ as a private package, installs a
stand-in driver that only reports the target GPUTarget("cuda", 90, 32), and turns every
`kernel[grid](...)` into `kernel.warmup(...)`: compile, no launch. It then calls the real
launchers (pointwise_loss, scale_grad_, masked_mse_loss, row_loss, batch_pair_loss,
info_nce_stats, info_nce_grad) on small CPU tensors, so each kernel is compiled through
triton.compile down to a cubin by ptxas with exactly the signature, pointer alignments,
integer specialisations and constexpr flags its launcher passes. A compile error is recorded
per kernel variant and the launcher goes on; a case fails with every error it met.
test_every_launched_kernel_is_compiled checks that each kernel a module launches (`name[`
in its source) was compiled by some case.

Launch-time checks come along: warmup runs JITFunction.run's check that the constexpr globals a
kernel read are unchanged, which the interpreter also skips (a `tl.constexpr(float("nan"))`
global fails it on every GPU launch: nan != nan).

Variants (shapes keep every integer argument other than 1, as real inputs do), each in float32,
float64, float16 and bfloat16: masked_mse's four flag combinations; info_nce's statistics
(rows, rows and columns, each with self excluded or not) and gradients (rows, columns or both,
each with self excluded or not, with b's gradient); the in-batch contrastive sweep with and
without a reference set and gradients, the hard and soft-hard triplet losses. The pointwise and
row launchers' flags multiply to several hundred variants, so there a representative subset:
each loss with each reduction, the weight layouts (none, full, periodic; pos_weight full and
periodic for BCE; the weight-sum "mean" of MSE and L1) and gradient sets (none, one, all; for
triplets with and without swap), so that each constexpr flag takes each of its values with the
others varied, plus scale_grad_. float32's tf32 tl.dot precision (allow_tf32) once for each
tl.dot kernel. 248 launcher calls, about 300 distinct compiles: 70 s on one core.
Skips only where this triton has no NVIDIA backend or no ptxas.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _kernels_dir() -> Path:
    """The Triton kernels' folder: the checkout's, else an installed fastloss's (a wheel under test)."""
    for candidate in [ROOT / "kernels"] + [Path(entry) / "fastloss" / "kernels" for entry in sys.path if entry]:
        if (candidate / "__init__.py").exists():
            return candidate
    raise FileNotFoundError("fastloss's Triton kernels are neither in the checkout nor installed")
TARGET = ("cuda", 90, 32)
MODULES = ("pointwise_loss", "masked_mse", "row_loss", "batch_pair_loss", "info_nce")
DTYPE_NAMES = ("float32", "float64", "float16", "bfloat16")
ALL = DTYPE_NAMES
F32 = ("float32",)

# ---- the cases: (id, dtypes, call(k, dtype)); k maps a module name to the loaded module ----
# Imports of torch happen in the child only (through these functions).


def _rand(*shape, dtype):
    import torch
    return torch.randn(*shape, dtype=torch.float64).to(dtype)


def _pointwise(loss, reduction, weight=None, pos_weight=None, by_weight=False, grads=(True, False)):
    """weight/pos_weight: None, "full" (input-sized) or "periodic" (one row, repeated)."""
    def operand(kind, dtype):
        return None if kind is None else _rand(*((24, 40) if kind == "full" else (40,)), dtype=dtype).abs()

    def call(k, dtype):
        x, t = _rand(24, 40, dtype=dtype), _rand(24, 40, dtype=dtype)
        if loss == 4:
            t = t.sigmoid()
        k["pointwise_loss"].pointwise_loss(x, t, operand(weight, dtype), operand(pos_weight, dtype), loss,
                                           reduction, 0.5, by_weight, *grads)
    return call


def _scale_grad(k, dtype):
    import torch
    k["pointwise_loss"].scale_grad_(_rand(24, 40, dtype=dtype), torch.tensor(0.5, dtype=dtype))


def _masked_mse(norm, grad):
    def call(k, dtype):
        mask = (_rand(12, dtype=dtype) > 0).to(dtype)
        k["masked_mse"].masked_mse_loss(_rand(12, 768, dtype=dtype), _rand(12, 768, dtype=dtype), mask, norm, 1e-6,
                                        grad)
    return call


def _row(loss, reduction, grads, label=False, c=False, p=2.0, swap=False):
    def call(k, dtype):
        lab = None
        if label:
            lab = (_rand(10, dtype=dtype) > 0).to(dtype) * (2 if loss == 6 else 1) - (1 if loss == 6 else 0)
        third = _rand(10, 1000, dtype=dtype) if c else None
        k["row_loss"].row_loss(_rand(10, 1000, dtype=dtype), _rand(10, 1000, dtype=dtype), third, lab, loss,
                               reduction, 1.0, 1e-6, p, swap, *grads)
    return call


def _tf32(call):
    """call with torch.backends.cuda.matmul.allow_tf32 (float32's "tf32" tl.dot precision)."""
    def wrapped(k, dtype):
        import torch
        before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            call(k, dtype)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = before
    return wrapped


def _batch(loss, reduction, need_q, need_r=False, ref=False, normalize=True):
    def call(k, dtype):
        import torch
        q = _rand(40, 128, dtype=dtype)
        labels = torch.randint(0, 4, (40,))
        r, r_labels = (_rand(36, 128, dtype=dtype), torch.randint(0, 4, (36,))) if ref else (None, None)
        k["batch_pair_loss"].batch_pair_loss(q, r, labels, r_labels, loss, reduction, 0.0 if loss == 0 else 0.2, 1.0,
                                             normalize, need_q, need_r)
    return call


def _temperature():
    import torch
    return torch.full((), 0.07, dtype=torch.float64)


def _info_nce_stats(exclude_self, col_stats):
    def call(k, dtype):
        a = _rand(40, 200, dtype=dtype)
        b = a if exclude_self else _rand(40, 200, dtype=dtype)
        k["info_nce"].info_nce_stats(a, b, _temperature(), 20 if exclude_self else 0, 40, 0 if exclude_self else -1,
                                     col_stats)
    return call


def _info_nce_grad(row, col, exclude_self, need_grad_b):
    def call(k, dtype):
        import torch
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        a = _rand(40, 200, dtype=dtype)
        b = a if exclude_self else _rand(40, 200, dtype=dtype)
        stats = [_rand(40, dtype=acc) if on else None for on in (row, row, col, col)]
        k["info_nce"].info_nce_grad(a, b, _temperature(), *stats, 20 if exclude_self else 0, 40,
                                    0 if exclude_self else -1, need_grad_b)
    return call


MSE, L1, SMOOTH_L1, HUBER, BCE = range(5)
NONE, MEAN, SUM = 0, 1, 2
LOSS_NAMES = {MSE: "mse", L1: "l1", SMOOTH_L1: "smooth_l1", HUBER: "huber", BCE: "bce"}
ROW_LOSSES = {0: "contrastive_euclidean", 1: "contrastive_manhattan", 2: "contrastive_cosine", 3: "triplet_l2",
              4: "triplet_l1", 5: "triplet_lp", 6: "cosine_embedding"}
CONTRASTIVE, HARD_TRIPLET, HARD_SOFT_TRIPLET = 0, 1, 2
AVG_NONZERO = 3

CASES = []
for _loss, _name in LOSS_NAMES.items():
    CASES += [
        (f"pointwise-{_name}-mean-train", ALL, _pointwise(_loss, MEAN, grads=(True, True))),
        (f"pointwise-{_name}-none-weighted", ALL, _pointwise(_loss, NONE, weight="full", grads=(True, False))),
        (f"pointwise-{_name}-sum-periodic-weight", ALL,
         _pointwise(_loss, SUM, weight="periodic", grads=(False, False))),
    ]
    if _loss in (MSE, L1):  # the ops' "mean" of these divides by sum(weight), on the device
        CASES.append((f"pointwise-{_name}-mean-by-weight-sum", ALL,
                      _pointwise(_loss, MEAN, weight="full", by_weight=True, grads=(False, True))))
CASES += [
    ("pointwise-bce-pos-weight", ALL, _pointwise(BCE, MEAN, weight="full", pos_weight="full", grads=(True, True))),
    ("pointwise-bce-periodic-weights", ALL,
     _pointwise(BCE, NONE, weight="periodic", pos_weight="periodic", grads=(True, False))),
    ("pointwise-scale-grad", ALL, _scale_grad),
]
CASES += [(f"masked_mse-norm{int(n)}-grad{int(g)}", ALL, _masked_mse(n, g)) for n in (False, True)
          for g in (False, True)]
for _loss, _name in ROW_LOSSES.items():
    _label, _c = _loss in (0, 1, 2, 6), _loss in (3, 4, 5)
    _p = 1.5 if _loss == 5 else 2.0
    CASES += [
        (f"row-{_name}-mean-train", ALL, _row(_loss, MEAN, (True, True, _c), _label, _c, _p, swap=_c)),
        (f"row-{_name}-sum-grad-b", ALL, _row(_loss, SUM, (False, True, False), _label, _c, _p, swap=False)),
        (f"row-{_name}-none-forward", ALL, _row(_loss, NONE, (False, False, False), _label, _c, _p, swap=False)),
    ]
CASES += [
    ("batch-contrastive-self-train", ALL, _batch(CONTRASTIVE, AVG_NONZERO, True)),
    ("batch-contrastive-self-forward", ALL, _batch(CONTRASTIVE, MEAN, False, normalize=False)),
    ("batch-contrastive-ref-train", ALL, _batch(CONTRASTIVE, SUM, True, True, ref=True)),
    ("batch-contrastive-ref-forward", ALL, _batch(CONTRASTIVE, MEAN, False, False, ref=True)),
    ("batch-contrastive-ref-train-tf32", F32, _tf32(_batch(CONTRASTIVE, SUM, True, True, ref=True))),
    ("batch-hard-triplet-train", ALL, _batch(HARD_TRIPLET, AVG_NONZERO, True)),
    ("batch-hard-soft-triplet-forward", ALL, _batch(HARD_SOFT_TRIPLET, MEAN, False, normalize=False)),
    ("batch-hard-triplet-train-tf32", F32, _tf32(_batch(HARD_TRIPLET, MEAN, True))),
    # statistics: rows (InfoNCE), rows and columns (CLIP), rows with self excluded (NT-Xent), and
    # columns with self excluded; gradients: rows, columns or both, with self excluded or not
    ("info_nce-stats-rows", ALL, _info_nce_stats(False, False)),
    ("info_nce-stats-rows-cols", ALL, _info_nce_stats(False, True)),
    ("info_nce-stats-self", ALL, _info_nce_stats(True, False)),
    ("info_nce-stats-self-cols", ALL, _info_nce_stats(True, True)),
    ("info_nce-grad-rows", ALL, _info_nce_grad(True, False, False, True)),
    ("info_nce-grad-cols", ALL, _info_nce_grad(False, True, False, True)),
    ("info_nce-grad-rows-cols", ALL, _info_nce_grad(True, True, False, True)),
    ("info_nce-grad-self", ALL, _info_nce_grad(True, True, True, False)),
    ("info_nce-grad-self-rows", ALL, _info_nce_grad(True, False, True, True)),
    ("info_nce-grad-self-cols", ALL, _info_nce_grad(False, True, True, True)),
    ("info_nce-stats-rows-cols-tf32", F32, _tf32(_info_nce_stats(False, True))),
    ("info_nce-grad-rows-cols-tf32", F32, _tf32(_info_nce_grad(True, True, False, True))),
]
CASE_IDS = [f"{name}-{dtype}" for name, dtypes, _ in CASES for dtype in dtypes]
assert len(set(CASE_IDS)) == len(CASE_IDS)


# ---- the child process: compile only, for TARGET ----

def _child(out_path: str, case_ids: list[str]) -> None:
    import importlib
    import importlib.util
    import traceback

    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    target = GPUTarget(*TARGET)

    class CompileOnlyDriver:  # what JITFunction.run asks of a driver when it only compiles
        def get_current_target(self):
            return target

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

    driver.set_active(CompileOnlyDriver())
    records: list[dict] = []

    def describe(fn, args, kwargs):
        dtypes = sorted({str(a.dtype).replace("torch.", "") for a in args if isinstance(a, torch.Tensor)})
        flags = " ".join(f"{k}={getattr(v, 'name', v)}" for k, v in kwargs.items())
        return f"{fn.__name__}[{','.join(dtypes)}] {flags}"

    def compile_only(self, grid):
        def launch(*args, **kwargs):
            start = time.perf_counter()
            try:
                self.warmup(*args, grid=grid, **kwargs)
                error = None
            except Exception as exc:  # recorded; the launcher goes on to its next kernel
                error = f"{type(exc).__name__}: {exc}"[-3000:]
            records.append({"kernel": f"{self.fn.__module__.rsplit('.', 1)[-1]}.{self.fn.__name__}",
                            "variant": describe(self.fn, args, kwargs), "error": error,
                            "seconds": time.perf_counter() - start})
        return launch

    JITFunction.__getitem__ = compile_only

    kernels_dir = _kernels_dir()
    spec = importlib.util.spec_from_file_location("_sm90_compile_kernels", kernels_dir / "__init__.py",
                                                  submodule_search_locations=[str(kernels_dir)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package
    spec.loader.exec_module(package)
    k = {name: importlib.import_module(f"{spec.name}.{name}") for name in MODULES}

    launched = {}  # the kernels each module launches: its own JITFunctions written `name[`
    for name, module in k.items():
        source = Path(module.__file__).read_text()
        kernels = [attr for attr, value in vars(module).items() if isinstance(value, triton.runtime.KernelInterface)]
        assert all(isinstance(getattr(module, a), JITFunction) for a in kernels), "kernels are interpreted"
        launched[name] = sorted(f"{name}.{a}" for a in kernels
                                if getattr(module, a).fn.__module__ == module.__name__ and f"{a}[" in source)

    calls = {f"{name}-{dtype}": (call, dtype) for name, dtypes, call in CASES for dtype in dtypes}
    results = {}
    for case_id in case_ids:
        call, dtype = calls[case_id]
        first = len(records)
        try:
            call(k, getattr(torch, dtype))
            error = None
        except Exception:
            error = traceback.format_exc()[-3000:]
        results[case_id] = {"records": records[first:], "error": error}
    Path(out_path).write_text(json.dumps({"launched": launched, "cases": results}))


# ---- the tests ----

def _skip_reason() -> str | None:
    try:
        import triton
        from triton import knobs
        from triton.backends import backends
    except ImportError as exc:
        return f"triton is not importable: {exc}"
    if "nvidia" not in backends:
        return f"triton {triton.__version__} has no NVIDIA backend"
    try:
        knobs.nvidia.ptxas
    except RuntimeError as exc:
        return f"triton's NVIDIA backend has no ptxas: {exc}"
    return None


@pytest.fixture(scope="module")
def compiled(request, tmp_path_factory):
    """Runs the child once for the cases this session selected (all of them for the coverage test)."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    this = request.module
    selected = [item.callspec.params["case"] for item in request.session.items
                if item.module is this and hasattr(item, "callspec")]
    if any(item.module is this and item.name == test_every_launched_kernel_is_compiled.__name__
           for item in request.session.items):
        selected = CASE_IDS
    work = tmp_path_factory.mktemp("sm90_compile")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(work / "cache")  # every run compiles, whatever was cached before
    env["CUDA_VISIBLE_DEVICES"] = ""
    out = work / "result.json"
    proc = subprocess.run([sys.executable, __file__, str(out), *selected], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0 and out.exists(), f"the compile child failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(out.read_text())


@pytest.mark.parametrize("case", CASE_IDS)
def test_kernels_compile_for_sm90(compiled, case):
    result = compiled["cases"][case]
    assert result["error"] is None, f"the launcher failed outside a kernel compile:\n{result['error']}"
    assert result["records"], "the launcher launched no kernel"
    failures = [f"{r['variant']}:\n{r['error']}" for r in result["records"] if r["error"]]
    assert not failures, (f"{len(failures)} kernel variant(s) fail for sm_90 (compile or launch check):\n\n"
                          + "\n\n".join(failures))


def test_every_launched_kernel_is_compiled(compiled):
    done = {r["kernel"] for case in compiled["cases"].values() for r in case["records"]}  # errors: per case
    launched = {kernel for kernels in compiled["launched"].values() for kernel in kernels}
    assert all(compiled["launched"][m] for m in MODULES), compiled["launched"]
    assert launched <= done, f"launched but never compiled here: {sorted(launched - done)}"


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2:])
