"""The all-pairs softmax losses (InfoNCE, CLIP's symmetric loss, SimCLR's NT-Xent) against
torch's F.cross_entropy on the materialised float64 logits, against the NT-Xent formula of the
paper written here and against pytorch-metric-learning, on every backend runnable here; their
ops, autograd paths, determinism, memory and errors."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

import fastloss
from conftest import backend_params
from helpers import assert_compiled_matches_eager
from loss_cases import oracle_info_nce, oracle_nt_xent

BACKENDS = backend_params()
KERNEL_BACKENDS = [p for p in BACKENDS if p.values[0][0] != "torch"]
OPS = {"cpu": ("info_nce_stats", "info_nce_grad"), "cuda": ("info_nce_stats", "info_nce_grad"),
       "triton": ("info_nce_stats_triton", "info_nce_grad_triton")}


TOL = {torch.float64: (1e-9, 1e-11), torch.float32: (2e-4, 2e-5), torch.float16: (2e-2, 2e-3),
       torch.bfloat16: (8e-2, 1e-2)}


def _close(actual, expected, dtype, what):
    """Within the dtype's tolerance, the absolute part scaled by the expected values' size (so
    that small gradients are compared as strictly as large ones)."""
    rtol, atol = TOL[dtype]
    finite = expected.detach()[expected.detach().isfinite()]
    scale = max(float(finite.abs().max()) if finite.numel() else 1.0, 1e-30)
    torch.testing.assert_close(actual.detach().double().cpu(), expected.detach().double(), rtol=rtol,
                               atol=atol * scale, equal_nan=True, msg=lambda m: f"{what} ({dtype}): {m}")


def rows(n, d, dtype=torch.float32, device="cpu", seed=0, scale=None):
    """Fresh normal rows, scaled so logits q.k are about N(0, 1) (never zeros)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, dtype=torch.float64, generator=g) * (scale if scale is not None else d ** -0.5)
    return x.to(device, dtype).requires_grad_()


def compare(fast, oracle, tensors, dtype, what, grad_output=None):
    """fast(*tensors) against oracle on float64 copies: the value and every gradient, with
    grad_output (default a random non-uniform one for unreduced losses, 1.7 otherwise)."""
    out = fast(*tensors)
    ups = [t.detach().double().cpu().requires_grad_(t.requires_grad) for t in tensors]
    expected = oracle(*ups)
    assert out.dtype == dtype, f"{what}: dtype {out.dtype}"
    assert out.shape == expected.shape, f"{what}: shape {tuple(out.shape)} vs {tuple(expected.shape)}"
    _close(out, expected, dtype, f"{what} loss")
    if grad_output is None:
        grad_output = torch.rand(expected.shape, dtype=torch.float64) + 0.5 if expected.dim() else torch.tensor(1.7)
    wanted = [i for i, t in enumerate(tensors) if t.requires_grad]
    got = torch.autograd.grad(out, [tensors[i] for i in wanted], grad_output.to(out.device, out.dtype))
    exp = torch.autograd.grad(expected, [ups[i] for i in wanted], grad_output)
    for i, g, e in zip(wanted, got, exp):
        assert g.dtype == tensors[i].dtype and g.shape == tensors[i].shape
        _close(g, e, dtype if tensors[i].dim() else torch.float32 if dtype != torch.float64 else dtype,
               f"{what} gradient of tensor {i}")


# ---- values and gradients ----

SHAPES = [(1, 1, 1), (1, 6, 3), (5, 5, 2), (37, 37, 130), (29, 71, 17)]
CPU_SHAPES = [(130, 600, 33), (257, 1031, 5)]  # several row blocks and column tiles


def _shapes(backend):
    return SHAPES + (CPU_SHAPES if backend in ("cpu", "torch", "cuda") else [])


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_info_nce_matches_cross_entropy(backend_device, symmetric, normalize, reduction):
    backend, device = backend_device
    for b, m, d in _shapes(backend):
        m = b if symmetric else m
        q, k = rows(b, d, device=device), rows(m, d, device=device, seed=1)
        t = torch.tensor(0.2, device=device, requires_grad=True)
        compare(lambda q, k, t: fastloss.info_nce_loss(q, k, t, symmetric=symmetric, normalize=normalize,
                                                       reduction=reduction, backend=backend),
                lambda q, k, t: oracle_info_nce(q, k, t, symmetric, normalize, reduction),
                [q, k, t], torch.float32, f"B={b} M={m} D={d}")


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("b,d", [(1, 1), (2, 3), (19, 8), (50, 130)], ids=str)
def test_nt_xent_matches_the_paper(backend_device, reduction, b, d):
    backend, device = backend_device
    z1, z2 = rows(b, d, device=device, scale=1.0), rows(b, d, device=device, seed=1, scale=1.0)
    t = torch.tensor(0.5, device=device, requires_grad=True)
    compare(lambda a, c, t: fastloss.nt_xent_loss(a, c, t, reduction=reduction, backend=backend),
            lambda a, c, t: oracle_nt_xent(a, c, t, reduction), [z1, z2, t], torch.float32, f"B={b} D={d}")


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("b", [3, 40])
def test_nt_xent_equals_pytorch_metric_learning(backend_device, b):
    backend, device = backend_device
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    z1, z2 = rows(b, 16, torch.float64, device, scale=1.0), rows(b, 16, torch.float64, device, seed=2, scale=1.0)
    zc = torch.cat([z1, z2]).detach().cpu().requires_grad_()
    labels = torch.cat([torch.arange(b), torch.arange(b)])
    expected = losses.NTXentLoss(temperature=0.3)(zc, labels)
    ours = fastloss.nt_xent_loss(z1, z2, 0.3, backend=backend)
    torch.testing.assert_close(ours.detach().cpu(), expected.detach(), rtol=1e-10, atol=1e-12)
    got = torch.cat(torch.autograd.grad(ours, (z1, z2))).cpu()
    torch.testing.assert_close(got, torch.autograd.grad(expected, zc)[0], rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_wide_rows(backend_device):
    backend, device = backend_device
    for d in (1, 1000, 1031):
        q, k = rows(9, d, device=device), rows(13, d, device=device, seed=3)
        compare(lambda q, k: fastloss.info_nce_loss(q, k, 0.1, backend=backend),
                lambda q, k: oracle_info_nce(q, k, 0.1), [q, k], torch.float32, f"D={d}")
        compare(lambda q, k: fastloss.info_nce_loss(q, k, 0.1, symmetric=True, reduction="none", backend=backend),
                lambda q, k: oracle_info_nce(q, k, 0.1, True, reduction="none"), [q, k[:9]], torch.float32,
                f"symmetric D={d}")


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("temperature", [0.01, 100.0])
def test_any_temperature_and_logits_beyond_exps_range(backend_device, temperature):
    """Logits of +-1e4 and more (e^1e4 is inf in float64) and tiny ones: the online
    log-sum-exp keeps them finite and exact; gradients too."""
    backend, device = backend_device
    q, k = rows(23, 6, device=device, scale=30.0), rows(31, 6, device=device, seed=4, scale=30.0)
    for symmetric in (False, True):
        kk = k[:23] if symmetric else k
        compare(lambda q, k: fastloss.info_nce_loss(q, k, temperature, symmetric=symmetric, reduction="none",
                                                    backend=backend),
                lambda q, k: oracle_info_nce(q, k, temperature, symmetric, reduction="none"), [q, kk],
                torch.float32, f"t={temperature} symmetric={symmetric}")
    z1, z2 = rows(12, 6, device=device, scale=1.0), rows(12, 6, device=device, seed=5, scale=1.0)
    compare(lambda a, c: fastloss.nt_xent_loss(a, c, temperature / 10, backend=backend),
            lambda a, c: oracle_nt_xent(a, c, temperature / 10), [z1, z2], torch.float32, f"nt_xent t={temperature}")


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_dtypes(backend_device, dtype):
    backend, device = backend_device
    q, k = rows(21, 10, dtype, device), rows(34, 10, dtype, device, seed=6)
    compare(lambda q, k: fastloss.info_nce_loss(q, k, 0.5, normalize=True, backend=backend),
            lambda q, k: oracle_info_nce(q, k, 0.5, normalize=True), [q, k], dtype, "info_nce")
    compare(lambda q, k: fastloss.info_nce_loss(q, k, 0.5, symmetric=True, reduction="none", backend=backend),
            lambda q, k: oracle_info_nce(q, k, 0.5, True, reduction="none"), [q, k[:21]], dtype, "clip")
    compare(lambda a, c: fastloss.nt_xent_loss(a, c, backend=backend), lambda a, c: oracle_nt_xent(a, c, 0.5),
            [q, k[:21]], dtype, "nt_xent")


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_mixed_dtypes_promote(backend_device):
    backend, device = backend_device
    q, k = rows(6, 4, torch.float32, device), rows(8, 4, torch.float64, device, seed=1)
    out = fastloss.info_nce_loss(q, k, backend=backend)
    assert out.dtype == torch.float64
    _close(out, oracle_info_nce(q.detach().double().cpu(), k.detach().cpu(), 0.07), torch.float32, "promoted")


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_nan_propagates_as_in_torch(backend_device):
    backend, device = backend_device
    q, k = rows(7, 5, device=device).detach(), rows(9, 5, device=device, seed=1).detach()
    q[2, 1] = float("nan")
    for symmetric in (False, True):
        kk = k[:7] if symmetric else k
        ours = fastloss.info_nce_loss(q, kk, 0.1, symmetric=symmetric, reduction="none", backend=backend)
        theirs = oracle_info_nce(q.double().cpu(), kk.double().cpu(), 0.1, symmetric, reduction="none")
        assert torch.equal(ours.isnan().cpu(), theirs.isnan()), (ours, theirs)
        assert ours.isnan().any()
    k2 = k.clone()
    k2[8, 0] = float("nan")  # an extra negative: every row sees it
    assert fastloss.info_nce_loss(q[3:], k2, reduction="none", backend=backend).isnan().all()
    assert fastloss.nt_xent_loss(q, k[:7], backend=backend).isnan()


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_empty_batch_as_torch(backend_device):
    backend, device = backend_device
    q, k = torch.empty(0, 4, device=device), torch.randn(3, 4, device=device)
    assert fastloss.info_nce_loss(q, k, reduction="mean", backend=backend).isnan()
    assert float(fastloss.info_nce_loss(q, k, reduction="sum", backend=backend)) == 0.0
    assert fastloss.info_nce_loss(q, k, reduction="none", backend=backend).shape == (0,)
    assert fastloss.nt_xent_loss(q, q, reduction="none", backend=backend).shape == (0,)


# ---- autograd paths ----

@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
def test_gradcheck_float64(backend_device):
    backend, device = backend_device
    q, k = rows(5, 3, torch.float64, device), rows(7, 3, torch.float64, device, seed=1)
    t = torch.tensor(0.3, dtype=torch.float64, device=device, requires_grad=True)
    for symmetric, reduction in ((False, "mean"), (True, "none"), (False, "sum")):
        kk = k[:5] if symmetric else k
        assert torch.autograd.gradcheck(
            lambda a, b, t: fastloss.info_nce_loss(a, b, t, symmetric=symmetric, normalize=True,
                                                   reduction=reduction, backend=backend), (q, kk, t))
    assert torch.autograd.gradcheck(lambda a, b, t: fastloss.nt_xent_loss(a, b, t, reduction="none",
                                                                          backend=backend), (q, k[:5], t))


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
def test_second_order_and_func_transforms(backend_device):
    backend, device = backend_device
    q, k = rows(6, 4, torch.float64, device), rows(8, 4, torch.float64, device, seed=1)
    t = torch.tensor(0.4, dtype=torch.float64, device=device, requires_grad=True)

    def both(fn):
        return fn(backend), fn("torch")

    # double backward (create_graph): a gradient penalty
    def penalty(bk):
        loss = fastloss.info_nce_loss(q, k, t, backend=bk)
        (gq,) = torch.autograd.grad(loss, q, create_graph=True)
        return torch.autograd.grad(gq.square().sum(), (q, k, t))
    for a, b in zip(*both(penalty)):
        torch.testing.assert_close(a, b)
    # torch.func: grad, vmap over a batch of problems, jvp
    for a, b in zip(*both(lambda bk: torch.func.grad(
            lambda x, y: fastloss.nt_xent_loss(x, y, 0.5, backend=bk), argnums=(0, 1))(q.detach(), k[:6].detach()))):
        torch.testing.assert_close(a, b)
    stacked = torch.stack([q.detach(), q.detach() * 2])
    a, b = both(lambda bk: torch.vmap(lambda x: fastloss.info_nce_loss(x, k.detach(), 0.3, backend=bk))(stacked))
    torch.testing.assert_close(a, b)
    tangent = torch.randn_like(q)
    a, b = both(lambda bk: torch.func.jvp(lambda x: fastloss.info_nce_loss(x, k.detach(), 0.3, symmetric=False,
                                                                           backend=bk), (q.detach(),), (tangent,)))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
def test_torch_compile_fullgraph(backend_device):
    backend, device = backend_device
    q, k = rows(40, 8, device=device), rows(40, 8, device=device, seed=1)
    t = torch.tensor(0.1, device=device)

    def step(a):
        return (fastloss.info_nce_loss(a, k, t, symmetric=True, backend=backend)
                + fastloss.nt_xent_loss(a, k, 0.5, backend=backend)) * 1.5

    assert_compiled_matches_eager(step, (q,), q, backend, device)


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
@pytest.mark.parametrize("kind", ["info_nce", "clip", "nt_xent"])
def test_bitwise_deterministic(backend_device, kind):
    backend, device = backend_device
    n = 45 if backend == "triton" else 700
    q0, k0 = rows(n, 24, device=device), rows(n + 800 if kind == "info_nce" else n, 24, device=device, seed=1)

    def run():
        q, k = q0.detach().clone().requires_grad_(), k0.detach().clone().requires_grad_()
        t = torch.tensor(0.1, device=device, requires_grad=True)
        if kind == "nt_xent":
            loss = fastloss.nt_xent_loss(q, k, t, backend=backend)
        else:
            loss = fastloss.info_nce_loss(q, k, t, symmetric=kind == "clip", backend=backend)
        loss.backward()
        return loss.detach(), q.grad, k.grad, t.grad

    first, second = run(), run()
    assert all(torch.equal(u, v) for u, v in zip(first, second))


def test_cpu_result_independent_of_thread_count():
    """The column stripes and the gradient rounds are cut by the sizes alone."""
    q0, k0 = rows(700, 24), rows(1500, 24, seed=1)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            q, k = q0.detach().clone().requires_grad_(), k0.detach().clone().requires_grad_()
            (fastloss.info_nce_loss(q, k, backend="cpu") + fastloss.info_nce_loss(q, k[:700], symmetric=True,
                                                                                 backend="cpu")).backward()
            results.append((q.grad, k.grad))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(u, v) for u, v in zip(results[0], other))


# ---- the op layer ----

@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
@pytest.mark.parametrize("case", ["info_nce", "clip", "nt_xent"])
def test_opcheck(backend_device, case):
    backend, device = backend_device
    stats, grad = (getattr(torch.ops.fastloss, name) for name in OPS[backend])
    t = torch.tensor(0.3, device=device)
    if case == "nt_xent":  # one batch of 10 against itself, row i's positive i + 5 (mod 10)
        a = torch.randn(10, 7, device=device)
        b, offset, period, self_offset, cols = a, 5, 10, 0, False
    else:
        a = torch.randn(11, 7, device=device)
        b = torch.randn(11 if case == "clip" else 16, 7, device=device)
        offset, period, self_offset, cols = 0, 11, -1, case == "clip"
    opcheck(stats, (a, b, t, offset, period, self_offset, cols))
    lse, _, col_lse = stats(a, b, t, offset, period, self_offset, cols)
    w = torch.rand(a.shape[0], device=device)
    if case == "info_nce":
        opcheck(grad, (a, b, t, lse, w, None, None, 0, period, -1, True))
        opcheck(grad, (b, a, t, None, None, lse, w, 0, 16, -1, False))
        # rows 3.. of a global set: positives and dropped pairs at an offset (the distributed case)
        opcheck(stats, (a, b, t, 5, 16, 3, False))
        opcheck(grad, (a, b, t, lse, w, None, None, 5, 16, 3, True))
    elif case == "clip":
        opcheck(grad, (a, b, t, lse, w, col_lse, w, 0, period, -1, True))
    else:
        opcheck(grad, (a, b, t, lse, w, lse, w, offset, period, self_offset, False))


# ---- memory ----

MEMORY_PROBE = textwrap.dedent("""
    import torch, fastloss
    b, d = 16384, 128
    torch.manual_seed(0)
    q = torch.randn(b, d, requires_grad=True)
    k = torch.randn(b, d, requires_grad=True)
    t = torch.tensor(0.07, requires_grad=True)
    fastloss.info_nce_loss(q[:256], k[:256], t, symmetric=True).backward()  # first-call set-up
    fastloss.nt_xent_loss(q[:256], k[:256]).backward()
    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    runs = {"info_nce": lambda: fastloss.info_nce_loss(q, k, t, normalize=True),
            "clip": lambda: fastloss.info_nce_loss(q, k, t, symmetric=True, normalize=True),
            "nt_xent": lambda: fastloss.nt_xent_loss(q, k)}
    for name, run in runs.items():
        q.grad = k.grad = t.grad = None
        base = rss("VmRSS:")
        open("/proc/self/clear_refs", "w").write("5")  # resets the peak (VmHWM)
        run().backward()
        print(name, rss("VmHWM:") - base)
""")


def test_memory_stays_linear_at_16384_rows():
    """The peak extra memory of a forward+backward at B = 16384, D = 128 (its own process) is under
    5% of what the materialised float32 logits alone would take (B x B; 2B x 2B for NT-Xent). That
    includes the gradients (2 x 8 MiB) and the normalised copies."""
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr
    logits = {"info_nce": 16384 ** 2 * 4, "clip": 16384 ** 2 * 4, "nt_xent": 32768 ** 2 * 4}
    seen = set()
    for line in proc.stdout.split("\n"):
        if line.strip():
            name, extra = line.split()
            seen.add(name)
            assert int(extra) < 0.05 * logits[name], f"{name}: {int(extra) / 2**20:.1f} MiB extra"
    assert seen == set(logits)


# ---- modules and errors ----

def test_modules_match_the_functions_and_learn_the_temperature():
    q, k = rows(12, 5), rows(12, 5, seed=1)
    scale = torch.nn.Parameter(torch.tensor(2.0))
    module = fastloss.InfoNCELoss(symmetric=True, normalize=True)
    out = module(q, k, 1 / scale.exp())
    ref = oracle_info_nce(q.detach().double(), k.detach().double(), 1 / torch.tensor(2.0, dtype=torch.float64).exp(),
                          True, True)
    _close(out, ref, torch.float32, "module")
    out.backward()
    s64 = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    oracle_info_nce(q.detach().double(), k.detach().double(), 1 / s64.exp(), True, True).backward()
    _close(scale.grad, s64.grad, torch.float32, "logit scale gradient")
    learned = fastloss.InfoNCELoss(torch.nn.Parameter(torch.tensor(0.1)))
    assert [name for name, _ in learned.named_parameters()] == ["temperature"]
    learned(q, k).backward()
    assert learned.temperature.grad is not None and learned.temperature.grad != 0
    assert "symmetric=True" in repr(module) and "tensor(0.1)" in repr(learned)
    nt = fastloss.NTXentLoss(0.2, reduction="sum")
    torch.testing.assert_close(nt(q, k), fastloss.nt_xent_loss(q, k, 0.2, reduction="sum"))


def test_bad_input():
    q, k = torch.randn(6, 3), torch.randn(8, 3)
    with pytest.raises(ValueError, match=r"key must have at least as many rows as query .* got query \(6, 3\) and key \(4, 3\)"):
        fastloss.info_nce_loss(q, k[:4])
    with pytest.raises(ValueError, match=r"symmetric=True needs as many keys as queries"):
        fastloss.info_nce_loss(q, k, symmetric=True)
    with pytest.raises(ValueError, match=r"key must have query's width D = 3, got shape \(8, 4\)"):
        fastloss.info_nce_loss(q, torch.randn(8, 4))
    with pytest.raises(ValueError, match=r"temperature must be a finite number > 0, got 0"):
        fastloss.info_nce_loss(q, k, 0)
    with pytest.raises(ValueError, match=r"temperature must be a finite number > 0, got -0.5"):
        fastloss.nt_xent_loss(q, q, -0.5)
    with pytest.raises(ValueError, match=r"temperature must be > 0, got -1.0"):
        fastloss.info_nce_loss(q, k, torch.tensor(-1.0))
    with pytest.raises(ValueError, match=r"temperature must be a scalar .* got a tensor of shape \(2,\)"):
        fastloss.info_nce_loss(q, k, torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"temperature must be a scalar .* got a tensor of shape \(1, 1\)"):
        fastloss.info_nce_loss(q, k, torch.tensor([[0.1]]))
    torch.testing.assert_close(fastloss.info_nce_loss(q, k[:6], torch.tensor([0.25])),  # one element, 1-d: accepted
                               fastloss.info_nce_loss(q, k[:6], 0.25))
    with pytest.raises(TypeError, match=r"temperature must be floating point, got torch.int64"):
        fastloss.info_nce_loss(q, k, torch.tensor(1))
    with pytest.raises(TypeError, match=r"temperature must be a float or a 0-d tensor, got str"):
        fastloss.info_nce_loss(q, k, "0.1")
    with pytest.raises(TypeError, match=r"query must be a floating-point tensor, got torch.int64"):
        fastloss.info_nce_loss(q.long(), k)
    with pytest.raises(TypeError, match=r"z2 must be a floating-point tensor, got torch.bool"):
        fastloss.nt_xent_loss(q, q > 0)
    with pytest.raises(ValueError, match=r"query must be \(rows, D\), got shape \(6,\)"):
        fastloss.info_nce_loss(q[:, 0], k)
    with pytest.raises(ValueError, match=r"z1 and z2 must be two views of one batch, \(B, D\) each, got \(6, 3\) and \(8, 3\)"):
        fastloss.nt_xent_loss(q, k)
    with pytest.raises(ValueError, match="avg_nonzero is not a valid value for reduction"):
        fastloss.info_nce_loss(q, k, reduction="avg_nonzero")
    with pytest.raises(RuntimeError, match=r"key must be on the same device as query \(cpu\), got meta"):
        fastloss.info_nce_loss(q, k.to("meta"))
    with pytest.raises(RuntimeError, match=r"temperature must be on the embeddings' device \(cpu\), got meta"):
        fastloss.info_nce_loss(q, k, torch.tensor(0.1, device="meta"))
    with pytest.raises(RuntimeError, match=r"pos_period must be >= 1, got 0"):
        torch.ops.fastloss.info_nce_grad(q, k, torch.tensor(0.1), torch.zeros(6), torch.ones(6), None, None, 1, 0,
                                         -1, True)
    with pytest.raises(RuntimeError, match=r"self_offset must be >= 0, or -1 for none, got -2"):
        torch.ops.fastloss.info_nce_stats(q, k, torch.tensor(0.1), 0, 6, -2, False)


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("scale", [300.0, 2e-5], ids=["norms-850", "norms-6e-5"])
def test_normalize_gradient_of_half_rows_far_from_unit_norm(backend_device, scale):
    """F.normalize's backward of float16 rows whose |x|^2 overflows or underflows float16: it
    must be computed as torch does, not in the rows' precision."""
    backend, device = backend_device
    q, k = rows(9, 8, torch.float16, device, scale=scale), rows(9, 8, torch.float16, device, seed=2, scale=scale)
    compare(lambda q, k: fastloss.info_nce_loss(q, k, 0.5, normalize=True, backend=backend),
            lambda q, k: oracle_info_nce(q, k, 0.5, normalize=True), [q, k], torch.float16, f"scale {scale}")
    compare(lambda a, c: fastloss.nt_xent_loss(a, c, 0.5, backend=backend), lambda a, c: oracle_nt_xent(a, c, 0.5),
            [q, k], torch.float16, f"nt_xent scale {scale}")
