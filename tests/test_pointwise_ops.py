"""The op layer under the pointwise losses: opcheck on every op, torch.compile, gradcheck,
determinism, single-pass training (what is computed, allocated and copied), and the
half/bfloat16 conversions of the C++ kernels."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

import fastloss
from fastloss import _backend
from fastloss.ops import pointwise
from conftest import HAS_CUDA, backend_params
from helpers import assert_compiled_matches_eager, DTYPES, random

# loss id -> (public function, its keyword arguments); ids as in csrc/formulas/pointwise.h
LOSS_CASES = {
    0: (fastloss.mse_loss, {}),
    1: (fastloss.l1_loss, {}),
    2: (fastloss.smooth_l1_loss, {"beta": 0.5}),
    3: (fastloss.huber_loss, {"delta": 0.8}),
    4: (fastloss.binary_cross_entropy_with_logits, {}),
}
# (loss id, weighted): smooth L1 takes no weight
LOSS_WEIGHT_CASES = [(loss, weighted) for loss in LOSS_CASES for weighted in (False, True)
                     if not (loss == 2 and weighted)]

FORWARD_OPS = {"cpu": "pointwise_loss", "cuda": "pointwise_loss", "triton": "pointwise_loss_triton"}
SCALE_OPS = {"cpu": "scale_grad_", "cuda": "scale_grad_", "triton": "scale_grad_triton_"}
KERNEL_BACKENDS = [p for p in backend_params() if p.values[0][0] != "torch"]


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("reduction", [0, 1, 2])
@pytest.mark.parametrize("grads", [(False, False), (True, False), (True, True)], ids=str)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("loss", list(LOSS_CASES))
def test_opcheck_forward(backend_device, dtype, reduction, grads, weighted, loss):
    backend, device = backend_device
    op = getattr(torch.ops.fastloss, FORWARD_OPS[backend])
    x, t = random((5, 8), dtype, device), random((5, 8), dtype, device)
    w = random((5, 8), dtype, device).abs() if weighted else None
    pos_weight = random((8,), dtype, device).abs() if loss == 4 else None
    opcheck(op, (x, t, w, pos_weight, loss, reduction, 0.5, loss in (0, 1), *grads))


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
@pytest.mark.parametrize("grad_output", ["one", "scalar", "elementwise"])
def test_opcheck_scale(backend_device, grad_output):
    backend, device = backend_device
    op = getattr(torch.ops.fastloss, SCALE_OPS[backend])
    g = random((41,), torch.float32, device)
    go = {"one": torch.tensor(1.0, device=device), "scalar": torch.tensor(-2.5, device=device),
          "elementwise": random((41,), torch.float32, device)}[grad_output]
    opcheck(op, (g, go))


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
def test_scale_is_exact_and_in_place(backend_device):
    backend, device = backend_device
    op = getattr(torch.ops.fastloss, SCALE_OPS[backend])
    g = random((4099,), torch.float32, device)
    before = g.clone()
    op(g, torch.tensor(1.0, device=device))
    assert torch.equal(g, before)
    op(g, torch.tensor(3.0, device=device))
    assert torch.equal(g, before * 3.0)
    # 1 is recognised by its bits, not by a conversion: the numbers whose integer value is 1.0's
    # bit pattern scale as any other
    for dtype, pattern in ((torch.float32, 0x3F800000), (torch.float64, 0x3FF0000000000000)):
        h = random((37,), dtype, device)
        expected = h * float(pattern)
        op(h, torch.tensor(float(pattern), dtype=dtype, device=device))
        assert torch.equal(h, expected), dtype


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
@pytest.mark.parametrize("use_module", [False, True])
def test_torch_compile_fullgraph_matches_eager(backend_device, use_module):
    backend, device = backend_device
    mse = fastloss.MSELoss(backend=backend)
    bce = fastloss.BCEWithLogitsLoss(pos_weight=torch.full((523,), 1.5, device=device), backend=backend)

    def step(x, t, w):
        if use_module:
            loss = mse(x * w, t) + bce(x, t.sigmoid())
        else:
            loss = (fastloss.mse_loss(x * w, t, backend=backend)
                    + fastloss.huber_loss(x, t, delta=0.5, backend=backend)
                    + fastloss.l1_loss(x, t, reduction="sum", backend=backend))
        return loss * 2.0  # not the last layer: grad_output != 1

    x = random((523,), torch.float32, device, requires_grad=True)
    t, w = random((523,), torch.float32, device), random((523,), torch.float32, device)
    assert_compiled_matches_eager(step, (x, t, w), x, backend, device)


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("loss,weighted", LOSS_WEIGHT_CASES)
def test_gradcheck_float64(backend_device, reduction, weighted, loss):
    backend, device = backend_device
    fn, kwargs = LOSS_CASES[loss]
    x = random((3, 11), torch.float64, device, requires_grad=True)
    t = random((3, 11), torch.float64, device, requires_grad=True)
    if weighted:
        kwargs = {**kwargs, "weight": random((3, 11), torch.float64, device).abs() + 0.1}
    if loss == 4:
        with torch.no_grad():
            t.copy_(t.sigmoid())
        kwargs = {**kwargs, "pos_weight": random((11,), torch.float64, device).abs() + 0.3}
    elif loss in (1, 2, 3):
        with torch.no_grad():  # keep |x - t| off the kinks (0, beta, delta), where finite differences straddle two branches
            d = x - t
            bad = ((d.abs() < 0.02) | ((d.abs() - 0.5).abs() < 0.02) | ((d.abs() - 0.8).abs() < 0.02))
            x[bad] += 0.1
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, reduction=reduction, backend=backend, **kwargs), (x, t))


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("loss,weighted", LOSS_WEIGHT_CASES)
def test_bitwise_deterministic(backend_device, dtype, weighted, loss):
    backend, device = backend_device
    fn, kwargs = LOSS_CASES[loss]
    n = 3 * 16384 + 4099
    x, t = random((n,), dtype, device), random((n,), dtype, device)
    w = random((n,), dtype, device).abs() if weighted else None

    def run():
        xx, tt = x.clone().requires_grad_(), t.clone().requires_grad_()
        loss = fn(xx, tt, weight=w, backend=backend, **kwargs) if w is not None else fn(xx, tt, backend=backend, **kwargs)
        loss.backward()
        return loss.detach(), xx.grad, tt.grad

    first, second = run(), run()
    for a, b in zip(first, second):
        assert torch.equal(a, b) or (a.isnan().all() and b.isnan().all())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("loss", list(LOSS_CASES))
def test_cpu_result_independent_of_thread_count(dtype, loss):
    fn, kwargs = LOSS_CASES[loss]
    n = 9 * 16384 + 123
    x, t = random((n,), dtype, "cpu", requires_grad=True), random((n,), dtype, "cpu")
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            x.grad = None
            out = fn(x, t, reduction="sum", backend="cpu", **kwargs)
            out.backward()
            results.append((out.detach().clone(), x.grad.clone()))
    finally:
        torch.set_num_threads(threads)
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


class ForwardSpy:
    """Records the flags each forward op call received and (numel, data_ptr) of the gradients
    it returned; it keeps no reference to them, which would force autograd to copy."""

    def __init__(self, monkeypatch):
        self.calls = []
        original = pointwise._forward_op

        def spy(backend):
            op = original(backend)

            def call(*args):
                out = op(*args)
                self.calls.append((args[-2:], tuple((o.numel(), o.data_ptr()) for o in out)))
                return out

            return call

        monkeypatch.setattr(pointwise, "_forward_op", spy)


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
def test_no_gradient_computed_without_requires_grad(backend_device, monkeypatch):
    backend, device = backend_device
    spy = ForwardSpy(monkeypatch)
    x, t = random((100,), torch.float32, device), random((100,), torch.float32, device)
    fastloss.mse_loss(x, t, backend=backend)
    (flags, (_, gi, gt)), = spy.calls
    assert flags == (False, False) and gi[0] == 0 and gt[0] == 0
    spy.calls.clear()
    fastloss.mse_loss(x.requires_grad_(), t, backend=backend)
    (flags, (_, gi, gt)), = spy.calls
    assert flags == (True, False) and gi[0] == 100 and gt[0] == 0


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
def test_backward_hands_over_the_forward_gradient_without_copy(backend_device, monkeypatch):
    backend, device = backend_device
    spy = ForwardSpy(monkeypatch)
    x = random((1000,), torch.float32, device, requires_grad=True)
    t = random((1000,), torch.float32, device)
    fastloss.mse_loss(x, t, backend=backend).backward()
    (_, (_, (_, gi_ptr), _)), = spy.calls
    assert x.grad.data_ptr() == gi_ptr  # the forward's buffer became .grad


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
def test_backward_twice_with_retain_graph(backend_device):
    backend, device = backend_device
    x = random((300,), torch.float32, device, requires_grad=True)
    t = random((300,), torch.float32, device)
    loss = fastloss.mse_loss(x, t, backend=backend) * 3.0
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    x.grad = None
    loss.backward()
    torch.testing.assert_close(x.grad, first, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["half", "bfloat16"])
def test_cpu_half_conversions_are_exact_for_every_value(kind):
    # Every 16-bit pattern as input: the C++ kernel's loads and its round-to-nearest-even
    # stores must agree bit for bit with torch's conversions of the same float32 math.
    dtype = torch.float16 if kind == "half" else torch.bfloat16
    x = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype)
    t = random((65536,), dtype, "cpu", scale=3.0)
    expected = ((x.float() - t.float()) ** 2).to(dtype)
    got = fastloss.mse_loss(x, t, reduction="none", backend="cpu")
    nan = expected.isnan()
    assert torch.equal(got.isnan(), nan)
    assert torch.equal(got[~nan].view(torch.int16), expected[~nan].view(torch.int16))
    # gradient stores, including subnormal results (tiny differences scaled by 1/N)
    xg = x.clone().requires_grad_()
    fastloss.mse_loss(xg, t, reduction="sum", backend="cpu").backward()
    expected_grad = (2.0 * (x.float() - t.float())).to(dtype)
    ok = ~expected_grad.isnan()
    assert torch.equal(xg.grad[ok].view(torch.int16), expected_grad[ok].view(torch.int16))


@pytest.mark.cuda
def test_cuda_non_default_stream():
    x = random((1 << 20,), torch.float32, "cuda", requires_grad=True)
    t = random((1 << 20,), torch.float32, "cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        loss = fastloss.mse_loss(x, t, backend="cuda")
        loss.backward()
    stream.synchronize()
    ref = F.mse_loss(x.detach().double(), t.double())
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=0)


ISA_SCRIPT = """
import sys, torch, fastloss
torch.manual_seed(7)
out = []
for fn, kw in [(fastloss.mse_loss, {}), (fastloss.l1_loss, {}), (fastloss.smooth_l1_loss, {"beta": 0.5}),
               (fastloss.huber_loss, {"delta": 0.7}), (fastloss.binary_cross_entropy_with_logits, {})]:
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        x = (torch.randn(70001, dtype=torch.float64) * 4).to(dtype).requires_grad_()
        t = torch.rand(70001, dtype=torch.float64).to(dtype)
        loss = fn(x, t, reduction="sum", backend="cpu", **kw)
        loss.backward()
        out += [loss.detach().reshape(1).double(), x.grad.double()]
x = torch.randn(6, 50, 97).requires_grad_()
loss = fastloss.masked_mse_loss(x, torch.randn(6, 50, 97), torch.rand(6, 50) < 0.7, norm_target=True, backend="cpu")
loss.backward()
out += [loss.detach().reshape(1).double(), x.grad.double()]

def run(fn, *tensors):  # the loss and every gradient, in float64 for the comparison
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    loss = fn(*leaves)
    loss.backward()
    return [loss.detach().reshape(-1).double()] + [t.grad.double() for t in leaves]

for dtype in (torch.float32, torch.float64, torch.bfloat16):
    # the row losses: 1029 rows of 131 (an odd tail for every lane count), each kind
    a, p, n = (torch.randn(1029, 131, dtype=torch.float64).mul(0.1).to(dtype) for _ in range(3))
    y = (torch.rand(1029) < 0.5).to(dtype)
    y_cos = torch.where(torch.rand(1029) < 0.5, 1.0, -1.0).to(dtype)
    for distance in ("euclidean", "manhattan", "cosine"):
        out += run(lambda u, v: fastloss.contrastive_loss(u, v, y, 1.3, distance, "sum", backend="cpu"), a, p)
    for p_norm, swap in ((2.0, False), (1.0, True), (3.0, True)):
        out += run(lambda u, v, w: fastloss.triplet_margin_loss(u, v, w, margin=1.5, p=p_norm, swap=swap,
                                                                backend="cpu"), a, p, n)
    out += run(lambda u, v: fastloss.cosine_embedding_loss(u, v, y_cos, 0.1, backend="cpu"), a, p)
    # the in-batch losses: a reference set, a batch of its own, both margins active
    labels = torch.randint(0, 9, (203,))
    e, r = torch.randn(203, 37).to(dtype), torch.randn(151, 37).to(dtype)
    out += run(lambda u: fastloss.batch_contrastive_loss(u, labels, 0.3, 1.1, backend="cpu"), e)
    out += run(lambda u, v: fastloss.batch_contrastive_loss(u, labels, 0.2, 1.2, ref_embeddings=v,
                                                            ref_labels=labels[:151], reduction="sum",
                                                            backend="cpu"), e, r)
    out += run(lambda u: fastloss.batch_hard_triplet_loss(u, labels, 0.2, backend="cpu"), e)
    out += run(lambda u: fastloss.batch_hard_triplet_loss(u, labels, soft=True, backend="cpu"), e)
    # the softmax losses: queries against more keys, CLIP's symmetric form, NT-Xent
    out += run(lambda u, v: fastloss.info_nce_loss(u, v, 0.1, backend="cpu"), e[:150], r)
    out += run(lambda u, v: fastloss.info_nce_loss(u, v, 0.2, symmetric=True, normalize=True, backend="cpu"),
               e[:151], r)
    out += run(lambda u, v: fastloss.nt_xent_loss(u, v, 0.5, backend="cpu"), e[:151], r)
torch.save((fastloss._backend.extension().cpu_isa(), out), sys.argv[1])
"""


def test_cpu_builds_for_each_instruction_set_agree_bit_for_bit(tmp_path):
    # The baseline, AVX2 and AVX-512 kernels of every family (pointwise, masked, row, in-batch,
    # softmax) share the summation order and the formulas, so on one machine they must give the
    # same bits; each runs in its own process (chosen once).
    results = {}
    for isa in ("baseline", "avx2", ""):
        path = tmp_path / f"{isa or 'best'}.pt"
        env = {**os.environ, "FASTLOSS_CPU_ISA": isa}
        proc = subprocess.run([sys.executable, "-c", ISA_SCRIPT, str(path)], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        results[isa or "best"] = torch.load(path)
    names = {k: v[0] for k, v in results.items()}
    flags = set(open("/proc/cpuinfo").read().split()) if os.path.exists("/proc/cpuinfo") else set()
    avx512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"} <= flags
    avx2 = {"avx2", "f16c", "fma"} <= flags
    assert names["baseline"] == "baseline"
    assert names["avx2"] == ("avx2+f16c" if avx2 else "baseline")
    assert names["best"] == ("avx512" if avx512 else names["avx2"])
    reference = results["baseline"][1]
    assert len(reference) == len(results["avx2"][1]) == len(results["best"][1])
    for key in ("avx2", "best"):
        for a, b in zip(reference, results[key][1]):
            assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a[~a.isnan()], b[~b.isnan()]), (names, key)


CACHE_EVICTION_SCRIPT = """
import torch, fastloss
from fastloss import _C
MiB = 1 << 20

def gradient_of(mib):  # an output of mib MiB, freed on return
    x = torch.randn(mib * MiB // 4, requires_grad=True)
    fastloss.mse_loss(x, torch.randn(mib * MiB // 4), backend="cpu").backward()

def cached():
    return [size // MiB for size in _C.output_cache_blocks()]

gradient_of(16); gradient_of(20)
assert cached() == [16, 20], cached()
gradient_of(16)  # reused, and now the most recent
assert cached() == [20, 16], cached()
gradient_of(24)  # 60 MiB > 40: the block returned longest ago goes back to the OS
assert cached() == [16, 24], cached()
gradient_of(48)  # larger than the whole cache: not kept, and nothing else evicted for it
assert cached() == [16, 24], cached()
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the huge-page output cache is Linux's")
def test_cpu_block_cache_keeps_the_sizes_in_use():
    # FASTLOSS_OUTPUT_CACHE_MB is read once per process: a child process with a 40 MiB cache
    env = {**os.environ, "FASTLOSS_OUTPUT_CACHE_MB": "40"}
    out = subprocess.run([sys.executable, "-c", CACHE_EVICTION_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_cpu_large_outputs_from_the_block_cache_are_correct_and_not_shared():
    # outputs of 16 MiB and more come from fastloss's huge-page block cache: a block still
    # held by a tensor must never be handed out again, and reuse must not leak old values
    n = (1 << 22) + 5  # a little over 16 MiB of float32
    x1, t1 = random((n,), torch.float32, "cpu", requires_grad=True), random((n,), torch.float32, "cpu")
    fastloss.mse_loss(x1, t1, reduction="sum", backend="cpu").backward()
    first = x1.grad
    expected_first = 2.0 * (x1.detach() - t1)
    x2, t2 = random((n,), torch.float32, "cpu", requires_grad=True), random((n,), torch.float32, "cpu")
    out = fastloss.mse_loss(x2, t2, reduction="none", backend="cpu")
    out.sum().backward()
    assert first.data_ptr() not in (x2.grad.data_ptr(), out.data_ptr())
    torch.testing.assert_close(first, expected_first)
    torch.testing.assert_close(out, (x2.detach() - t2) ** 2)
    torch.testing.assert_close(x2.grad, 2.0 * (x2.detach() - t2))
    del first, x1  # its block returns to the cache; the next output of that size reuses it
    x3 = random((n,), torch.float32, "cpu", requires_grad=True)
    fastloss.mse_loss(x3, t1, reduction="sum", backend="cpu").backward()
    torch.testing.assert_close(x3.grad, 2.0 * (x3.detach() - t1))


def test_poisoned_outputs_fill_every_new_cpu_output_with_nan():
    """The test helper that catches unwritten outputs does fill them on CPU: torch.empty in
    Python (the Triton launchers) and the dispatcher's aten::empty, which at::empty in the C++
    kernels calls."""
    from helpers import poisoned_outputs

    with poisoned_outputs("cpu"):
        assert torch.isnan(torch.empty(1000)).all()
        assert torch.isnan(torch.empty_like(torch.zeros(7, 3, dtype=torch.float64))).all()
        assert torch.isnan(torch.ops.aten.empty.memory_format([33], dtype=torch.bfloat16)).all()
    assert not torch.are_deterministic_algorithms_enabled()
