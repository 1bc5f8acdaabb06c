"""The in-batch losses (all-pairs contrastive, batch-hard triplet) against pytorch-metric-learning
and against a float64 formula written here on the materialised distance matrix, on every backend
runnable here; their ops, determinism, memory and errors."""

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


BACKENDS = backend_params()
KERNEL_BACKENDS = [p for p in BACKENDS if p.values[0][0] != "torch"]
FORWARD_OPS = {"cpu": "batch_pair_loss", "cuda": "batch_pair_loss", "triton": "batch_pair_loss_triton"}


# ---- the oracle: the definitions, on the whole matrix, with torch's exact (direct) distances ----

def _unit(x, normalize):
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12) if normalize else x


def _distances(q, r):
    return torch.cdist(q, r, compute_mode="donot_use_mm_for_euclid_dist")


def oracle_contrastive(x, y, pos_margin=0.0, neg_margin=1.0, normalize=True, ref=None, ref_y=None,
                       reduction="avg_nonzero"):
    q = _unit(x, normalize)
    r, ry = (q, y) if ref is None else (_unit(ref, normalize), ref_y)
    d = _distances(q, r)
    same = y[:, None] == ry[None, :]
    pos = same & ~torch.eye(len(y), dtype=torch.bool) if ref is None else same
    neg = ~same
    # relu, as pytorch-metric-learning: its gradient at 0 is 0 in every torch (clamp_min's is not)
    pc, nc = F.relu(d - pos_margin)[pos], F.relu(neg_margin - d)[neg]
    if reduction == "avg_nonzero":
        mean = lambda c: c[c > 0].mean() if bool((c > 0).any()) else d.sum() * 0  # noqa: E731
        return mean(pc) + mean(nc)
    total = pc.sum() + nc.sum()
    return total / max(int(pos.sum() + neg.sum()), 1) if reduction == "mean" else total


def oracle_hard_triplet(x, y, margin=0.05, normalize=True, soft=False, reduction="avg_nonzero"):
    q = _unit(x, normalize)
    d = _distances(q, q)
    costs = []
    for i in range(len(y)):
        positives = [j for j in range(len(y)) if j != i and y[j] == y[i]]
        negatives = [j for j in range(len(y)) if y[j] != y[i]]
        if not positives or not negatives:
            continue
        p = max(positives, key=lambda j: (float(d[i, j]), -j))  # ties: the lowest index
        n = min(negatives, key=lambda j: (float(d[i, j]), j))
        v = d[i, p] - d[i, n]
        costs.append(F.softplus(v) if soft else (v + margin).clamp_min(0))
    c = torch.stack(costs) if costs else d.sum(0)[:0]
    if reduction == "avg_nonzero":
        return c[c > 0].mean() if bool((c > 0).any()) else d.sum() * 0
    return c.sum() / max(len(costs), 1) if reduction == "mean" else c.sum()


# ---- inputs ----

LABELINGS = {
    "typical": lambda n, g: torch.randint(0, max(1, n // 4), (n,), generator=g),
    "one_class": lambda n, g: torch.zeros(n, dtype=torch.int64),
    "all_distinct": lambda n, g: torch.randperm(n, generator=g) * 7 - 3,
    "singletons": lambda n, g: torch.cat([torch.randint(0, 2, (n - n // 3,), generator=g),
                                          100 + torch.arange(n // 3)]),
}


def make(n, d, labeling="typical", dtype=torch.float64, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, dtype=torch.float64, generator=g).to(device, dtype).requires_grad_()
    y = LABELINGS[labeling](n, g).to(device)
    return x, y


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors, allow_unused=True)


def _close(a, b, dtype, what):
    tol = {torch.float64: (1e-9, 1e-11), torch.float32: (2e-4, 2e-6), torch.float16: (2e-2, 2e-4),
           torch.bfloat16: (6e-2, 2e-3)}[dtype]
    torch.testing.assert_close(a.double().cpu(), b.double().cpu(), rtol=tol[0], atol=tol[1], msg=lambda m: f"{what}: {m}")


def check(fast, oracle, tensors, dtype, what):
    """fastloss's value and gradients against the oracle evaluated in float64 on the same values."""
    out = fast(*tensors)
    ups = [t.detach().double().cpu().requires_grad_() for t in tensors]
    expected = oracle(*ups)
    assert out.dtype == dtype and out.shape == ()
    _close(out.detach(), expected.detach(), dtype, f"{what} loss")
    for k, (g, e) in enumerate(zip(_grads(out, tensors), _grads(expected, ups))):
        assert torch.isfinite(g).all(), f"{what}: gradient {k} not finite"
        _close(g, torch.zeros_like(ups[k]) if e is None else e, dtype, f"{what} gradient {k}")


SIZES = [(2, 3), (7, 5), (13, 1), (31, 17), (300, 33), (1031, 9)]


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("labeling", list(LABELINGS))
@pytest.mark.parametrize("size", SIZES, ids=str)
def test_contrastive_matches_the_definition(backend_device, labeling, size):
    backend, device = backend_device
    if backend == "triton" and size[0] > 300:
        size = (301, size[1])  # the interpreter runs every program in Python
    x, y = make(*size, labeling, device=device)
    check(lambda a: fastloss.batch_contrastive_loss(a, y, backend=backend),
          lambda a: oracle_contrastive(a, y.cpu()), [x], torch.float64, f"contrastive {labeling} {size}")


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("labeling", list(LABELINGS))
@pytest.mark.parametrize("size", SIZES, ids=str)
def test_hard_triplet_matches_the_definition(backend_device, labeling, size):
    backend, device = backend_device
    if size[0] > 300:
        size = (301, size[1])  # the oracle loops over anchors in Python
    x, y = make(*size, labeling, device=device)
    check(lambda a: fastloss.batch_hard_triplet_loss(a, y, backend=backend),
          lambda a: oracle_hard_triplet(a, y.cpu()), [x], torch.float64, f"hard triplet {labeling} {size}")


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("reduction", ["avg_nonzero", "mean", "sum"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("margins", [(0.0, 1.0), (0.3, 1.7)], ids=str)
def test_contrastive_reductions_margins_normalize_and_reference_set(backend_device, reduction, normalize, margins):
    backend, device = backend_device
    x, y = make(37, 11, device=device)
    ref, ry = make(23, 11, seed=1, device=device)
    kwargs = dict(pos_margin=margins[0], neg_margin=margins[1], normalize=normalize, reduction=reduction)
    check(lambda a: fastloss.batch_contrastive_loss(a, y, backend=backend, **kwargs),
          lambda a: oracle_contrastive(a, y.cpu(), **kwargs), [x], torch.float64, "self")
    check(lambda a, b: fastloss.batch_contrastive_loss(a, y, ref_embeddings=b, ref_labels=ry, backend=backend,
                                                       **kwargs),
          lambda a, b: oracle_contrastive(a, y.cpu(), ref=b, ref_y=ry.cpu(), **kwargs), [x, ref], torch.float64,
          "reference set")


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("reduction", ["avg_nonzero", "mean", "sum"])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
def test_hard_triplet_reductions_soft_and_normalize(backend_device, reduction, soft, normalize):
    backend, device = backend_device
    x, y = make(41, 6, device=device)
    kwargs = dict(margin=0.3, soft=soft, normalize=normalize, reduction=reduction)
    check(lambda a: fastloss.batch_hard_triplet_loss(a, y, backend=backend, **kwargs),
          lambda a: oracle_hard_triplet(a, y.cpu(), **kwargs), [x], torch.float64, "hard triplet")


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_lower_precisions(backend_device, dtype):
    backend, device = backend_device
    x, y = make(67, 24, dtype=dtype, device=device)
    check(lambda a: fastloss.batch_contrastive_loss(a, y, backend=backend), lambda a: oracle_contrastive(a, y.cpu()),
          [x], dtype, f"contrastive {dtype}")
    # the hard mining picks by distance: in half precision near ties may pick another row than
    # float64 does, so the triplet loss is checked in float32 only
    if dtype == torch.float32:
        check(lambda a: fastloss.batch_hard_triplet_loss(a, y, backend=backend),
              lambda a: oracle_hard_triplet(a, y.cpu()), [x], dtype, "hard triplet float32")


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_duplicate_embeddings_have_distance_zero_and_pass_no_gradient_through_it(backend_device):
    backend, device = backend_device
    x, y = make(12, 8, device=device)
    with torch.no_grad():
        x[5] = x[2]  # a duplicate with the same label...
        y[5] = y[2]
        x[9] = x[3] * 2.0  # ...and one (after normalisation) with another label
        y[9] = y[3] + 1000
    for reduction in ("avg_nonzero", "sum"):
        check(lambda a: fastloss.batch_contrastive_loss(a, y, reduction=reduction, backend=backend),
              lambda a: oracle_contrastive(a, y.cpu(), reduction=reduction), [x], torch.float64, "duplicates")


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_ties_go_to_the_lowest_index(backend_device):
    backend, device = backend_device
    # rows 1 and 2 are both at the same (largest) distance from anchor 0: row 1 is its positive
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [1.0, 0.1], [0.9, 0.5]], dtype=torch.float64)
    x = e.to(device).requires_grad_()
    y = torch.tensor([0, 0, 0, 1, 1], device=device)
    loss = fastloss.batch_hard_triplet_loss(x, y, margin=5.0, reduction="sum", backend=backend)
    expected = oracle_hard_triplet(e.clone().requires_grad_(), y.cpu(), margin=5.0, reduction="sum")
    torch.testing.assert_close(loss.cpu(), expected.detach())
    (g,) = torch.autograd.grad(loss, x)
    ref = e.clone().requires_grad_()
    (ge,) = torch.autograd.grad(oracle_hard_triplet(ref, y.cpu(), margin=5.0, reduction="sum"), ref)
    torch.testing.assert_close(g.cpu(), ge)


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_batches_give_zero(backend_device, n):
    backend, device = backend_device
    x, y = make(max(n, 1), 5, device=device)
    x = x.detach()[:n].requires_grad_()
    y = y[:n]
    for loss in (fastloss.batch_contrastive_loss(x, y, backend=backend),
                 fastloss.batch_hard_triplet_loss(x, y, backend=backend)):
        assert loss.item() == 0.0
        (g,) = torch.autograd.grad(loss, x)
        assert g.shape == x.shape and not g.any()


# ---- pytorch-metric-learning: the peer whose semantics these follow ----

def _peer():
    """pytorch-metric-learning (installed by `make test`; the GPU machine may lack it)."""
    distances = pytest.importorskip("pytorch_metric_learning.distances")
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    miners = pytest.importorskip("pytorch_metric_learning.miners")
    return distances, losses, miners


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("labeling", ["typical", "one_class", "all_distinct", "singletons"])
@pytest.mark.parametrize("n", [9, 64], ids=str)
@pytest.mark.parametrize("normalize", [True, False])
def test_contrastive_equals_pytorch_metric_learning(backend_device, labeling, n, normalize):
    backend, device = backend_device
    pml_distances, pml_losses, _ = _peer()
    x, y = make(n, 16, labeling, device=device)
    peer = pml_losses.ContrastiveLoss(distance=pml_distances.LpDistance(normalize_embeddings=normalize))
    xc = x.detach().cpu().requires_grad_()
    expected = peer(xc, y.cpu())
    ours = fastloss.batch_contrastive_loss(x, y, normalize=normalize, backend=backend)
    torch.testing.assert_close(ours.detach().cpu(), expected.detach(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0].cpu(), torch.autograd.grad(expected, xc)[0],
                               rtol=1e-7, atol=1e-10)
    # a reference set: every (query, reference) pair, none excluded
    ref, ry = make(n + 5, 16, labeling, seed=3, device=device)
    rc = ref.detach().cpu().requires_grad_()
    expected = peer(xc, y.cpu(), ref_emb=rc, ref_labels=ry.cpu())
    ours = fastloss.batch_contrastive_loss(x, y, ref_embeddings=ref, ref_labels=ry, normalize=normalize,
                                           backend=backend)
    torch.testing.assert_close(ours.detach().cpu(), expected.detach(), rtol=1e-9, atol=1e-12)
    for g, e in zip(torch.autograd.grad(ours, (x, ref)), torch.autograd.grad(expected, (xc, rc))):
        torch.testing.assert_close(g.cpu(), e, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("labeling", ["typical", "one_class", "all_distinct", "singletons"])
@pytest.mark.parametrize("n", [9, 64], ids=str)
def test_hard_triplet_equals_pytorch_metric_learning_batch_hard(backend_device, labeling, n):
    backend, device = backend_device
    _, pml_losses, pml_miners = _peer()
    x, y = make(n, 16, labeling, device=device)
    xc = x.detach().cpu().requires_grad_()
    mined = pml_miners.BatchHardMiner()(xc, y.cpu())
    expected = pml_losses.TripletMarginLoss(margin=0.05)(xc, y.cpu(), mined)
    ours = fastloss.batch_hard_triplet_loss(x, y, backend=backend)
    torch.testing.assert_close(ours.detach().cpu(), expected.detach(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0].cpu(), torch.autograd.grad(expected, xc)[0],
                               rtol=1e-7, atol=1e-10)


def test_modules_match_the_functions():
    x, y = make(20, 6)
    ref, ry = make(9, 6, seed=2)
    module = fastloss.BatchContrastiveLoss(0.1, 0.9, normalize=False, reduction="sum")
    torch.testing.assert_close(module(x, y, ref, ry), oracle_contrastive(x, y, 0.1, 0.9, False, ref, ry, "sum"))
    module = fastloss.BatchHardTripletLoss(0.2, soft=False, reduction="mean")
    torch.testing.assert_close(module(x, y), oracle_hard_triplet(x, y, 0.2, reduction="mean"))
    assert "pos_margin=0.1" in repr(fastloss.BatchContrastiveLoss(0.1))


# ---- the op layer ----

@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
@pytest.mark.parametrize("loss,reference_set", [(0, False), (0, True), (1, False), (2, False)], ids=str)
@pytest.mark.parametrize("grads", [(False, False), (True, True)], ids=str)
@pytest.mark.parametrize("normalize", [True, False])
def test_opcheck(backend_device, loss, reference_set, grads, normalize):
    backend, device = backend_device
    op = getattr(torch.ops.fastloss, FORWARD_OPS[backend])
    q = torch.randn(19, 7, device=device)
    y = torch.randint(0, 4, (19,), device=device)
    r = torch.randn(11, 7, device=device) if reference_set else None
    ry = torch.randint(0, 4, (11,), device=device) if reference_set else None
    opcheck(op, (q, r, y, ry, loss, 3, 0.05 if loss else 0.0, 1.0, normalize, *grads))


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
def test_gradcheck_float64(backend_device):
    backend, device = backend_device
    x, y = make(9, 4, device=device)
    ref, ry = make(6, 4, seed=5, device=device)
    assert torch.autograd.gradcheck(
        lambda a, b: fastloss.batch_contrastive_loss(a, y, 0.2, 1.1, ref_embeddings=b, ref_labels=ry,
                                                     reduction="sum", backend=backend), (x, ref))
    assert torch.autograd.gradcheck(
        lambda a: fastloss.batch_hard_triplet_loss(a, y, 0.3, reduction="mean", backend=backend), (x,))
    assert torch.autograd.gradcheck(
        lambda a: fastloss.batch_hard_triplet_loss(a, y, soft=True, backend=backend), (x,))


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
def test_torch_compile_fullgraph(backend_device):
    backend, device = backend_device
    x, y = make(40, 8, dtype=torch.float32, device=device)

    def step(a):
        return (fastloss.batch_contrastive_loss(a, y, backend=backend)
                + fastloss.batch_hard_triplet_loss(a, y, backend=backend)) * 1.5

    assert_compiled_matches_eager(step, (x,), x, backend, device)


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
@pytest.mark.parametrize("which", ["contrastive", "reference_set", "hard"])
def test_bitwise_deterministic(backend_device, which):
    backend, device = backend_device
    x, y = make(301 if backend == "triton" else 1500, 24, dtype=torch.float32, device=device)
    ref, ry = make(70, 24, dtype=torch.float32, seed=4, device=device)

    def run():
        a, b = x.detach().clone().requires_grad_(), ref.detach().clone().requires_grad_()
        if which == "hard":
            loss = fastloss.batch_hard_triplet_loss(a, y, backend=backend)
        else:
            kw = dict(ref_embeddings=b, ref_labels=ry) if which == "reference_set" else {}
            loss = fastloss.batch_contrastive_loss(a, y, backend=backend, **kw)
        loss.backward()
        return loss.detach(), a.grad, b.grad

    first, second = run(), run()
    for u, v in zip(first, second):
        assert (u is None and v is None) or torch.equal(u, v)


def test_cpu_result_independent_of_thread_count():
    x, y = make(1500, 24, dtype=torch.float32)
    ref, ry = make(900, 24, dtype=torch.float32, seed=4)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            a, b = x.detach().clone().requires_grad_(), ref.detach().clone().requires_grad_()
            (fastloss.batch_contrastive_loss(a, y, ref_embeddings=b, ref_labels=ry, backend="cpu")
             + fastloss.batch_hard_triplet_loss(a, y, backend="cpu")).backward()
            results.append((a.grad, b.grad))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(u, v) for u, v in zip(results[0], other))


MEMORY_PROBE = textwrap.dedent("""
    import sys, torch, fastloss
    n, d = 16384, 128
    torch.manual_seed(0)
    x = torch.randn(n, d, requires_grad=True)
    y = torch.randint(0, 1000, (n,))
    fastloss.batch_contrastive_loss(x[:256], y[:256]).backward()  # imports and first-call set-up
    fastloss.batch_hard_triplet_loss(x[:256], y[:256]).backward()
    x.grad = None
    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    for fn in (fastloss.batch_contrastive_loss, fastloss.batch_hard_triplet_loss):
        x.grad = None
        base = rss("VmRSS:")
        open("/proc/self/clear_refs", "w").write("5")  # resets the peak (VmHWM)
        fn(x, y).backward()
        print(fn.__name__, rss("VmHWM:") - base)
""")


def test_memory_stays_linear_at_16384_rows():
    """The peak extra memory of a forward+backward at N = 16384, D = 128 (its own process) is
    under 5% of what the N x N float32 distance matrix alone would take (1 GiB)."""
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr
    matrix = 16384 * 16384 * 4
    for line in proc.stdout.split("\n"):
        if line.strip():
            name, extra = line.split()
            assert int(extra) < 0.05 * matrix, f"{name}: {int(extra) / 2**20:.1f} MiB extra"


# ---- errors ----

def test_bad_input():
    x, y = make(6, 3)
    with pytest.raises(TypeError, match=r"labels must be an integer tensor \(class ids\), got torch.float32"):
        fastloss.batch_contrastive_loss(x, y.float())
    with pytest.raises(ValueError, match=r"labels must be 1-D with one label per row of embeddings \(6,\), got shape \(5,\)"):
        fastloss.batch_contrastive_loss(x, y[:5])
    with pytest.raises(ValueError, match=r"labels must be 1-D .* got shape \(6, 1\)"):
        fastloss.batch_hard_triplet_loss(x, y[:, None])
    with pytest.raises(ValueError, match="ref_embeddings was given without ref_labels"):
        fastloss.batch_contrastive_loss(x, y, ref_embeddings=x)
    with pytest.raises(ValueError, match="ref_labels was given without ref_embeddings"):
        fastloss.batch_contrastive_loss(x, y, ref_labels=y)
    with pytest.raises(ValueError, match=r"ref_embeddings must have embeddings' width D = 3, got shape \(6, 4\)"):
        fastloss.batch_contrastive_loss(x, y, ref_embeddings=torch.randn(6, 4), ref_labels=y)
    with pytest.raises(TypeError, match="embeddings must be float32, float64, float16 or bfloat16, got torch.int64"):
        fastloss.batch_contrastive_loss(y[:, None].expand(6, 3), y)
    with pytest.raises(ValueError, match=r"embeddings must be \(N, D\) rows, got shape \(6,\)"):
        fastloss.batch_hard_triplet_loss(y.double(), y)
    with pytest.raises(ValueError, match="avg is not a valid value for reduction: expected 'avg_nonzero'"):
        fastloss.batch_contrastive_loss(x, y, reduction="avg")
    with pytest.raises(ValueError, match="neg_margin must be >= 0"):
        fastloss.batch_contrastive_loss(x, y, neg_margin=-1.0)
    with pytest.raises(ValueError, match="pos_margin must be >= 0"):
        fastloss.batch_contrastive_loss(x, y, pos_margin=float("nan"))
    with pytest.raises(ValueError, match="margin must be >= 0"):
        fastloss.batch_hard_triplet_loss(x, y, margin=-0.1)
    with pytest.raises(RuntimeError, match=r"labels must be on the same device as embeddings \(cpu\), got meta"):
        fastloss.batch_contrastive_loss(x, y.to("meta"))


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
@pytest.mark.parametrize("loss", [0, 1, 2], ids=["contrastive", "hard", "hard-soft"])
def test_opcheck_against_a_set_holding_the_queries(backend_device, loss):
    """The op's reference-set form with self_offset (a rank's rows against the gathered batch):
    opcheck, and the stats it returns against the reduced values."""
    backend, device = backend_device
    op = getattr(torch.ops.fastloss, FORWARD_OPS[backend])
    r = torch.randn(17, 6, device=device)
    ry = torch.randint(0, 3, (17,), device=device)
    q, qy = r[5:12].clone(), ry[5:12].clone()
    opcheck(op, (q, r, qy, ry, loss, 3, 0.2, 0.9, True, True, True, 5))
    total, _, _, stats = op(q, r, qy, ry, loss, 2, 0.2, 0.9, True, False, False, 5)
    torch.testing.assert_close(total.double(), stats[4], rtol=1e-6, atol=1e-6)
    mean = op(q, r, qy, ry, loss, 1, 0.2, 0.9, True, False, False, 5)[0]
    # the mean's count: every pair but the 7 rows' own (contrastive), the kept anchors (batch-hard)
    count = 7 * 17 - 7 if loss == 0 else float(stats[1])
    torch.testing.assert_close(mean.double(), stats[4] / count, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
@pytest.mark.parametrize("offset", [0, 5, 14])
@pytest.mark.parametrize("loss", [0, 1, 2])
def test_a_set_holding_the_queries_against_the_definition(backend_device, offset, loss):
    """The op's reference-set form with self_offset (a rank's rows inside the gathered batch):
    the pairs (i, i + offset), a row with itself, are no pairs; the sum and both gradients
    against the definitions written here (the last rows' own rows lie past the set at 14)."""
    backend, device = backend_device
    op = getattr(torch.ops.fastloss, FORWARD_OPS[backend])
    gen = torch.Generator().manual_seed(offset + 10 * loss)
    r = torch.randn(19, 6, dtype=torch.float64, generator=gen)
    ry = torch.randint(0, 4, (19,), generator=gen)
    q, qy = torch.randn(7, 6, dtype=torch.float64, generator=gen), ry[offset:offset + 7].clone()
    if len(qy) < 7:
        qy = torch.cat([qy, torch.randint(0, 4, (7 - len(qy),), generator=gen)])
    inside = (torch.arange(7) + offset)[:, None] == torch.arange(19)[None, :]
    # q is not a copy of its rows in the set: a dropped pair then has a distance, so keeping it
    # (or dropping another) changes the sums

    def oracle(qq, rr):
        d = _distances(_unit(qq, True), _unit(rr, True))
        same = qy[:, None] == ry[None, :]
        pos, neg = same & ~inside, ~same
        if loss == 0:
            return (d - 0.2).clamp_min(0)[pos].sum() + (0.9 - d).clamp_min(0)[neg].sum()
        total = d.sum() * 0
        for i in range(7):
            if pos[i].any() and neg[i].any():
                v = torch.where(pos[i], d[i], -torch.inf).max() - torch.where(neg[i], d[i], torch.inf).min()
                total = total + (F.softplus(v) if loss == 2 else (v + 0.2).clamp_min(0))
        return total

    qd, rd = q.to(device).requires_grad_(), r.to(device).requires_grad_()
    value, grad_q, grad_r, _ = op(qd, rd, qy.to(device), ry.to(device), loss, 2, 0.2, 0.9, True, True, True, offset)
    qo, ro = q.clone().requires_grad_(), r.clone().requires_grad_()
    expected = oracle(qo, ro)
    expected_q, expected_r = torch.autograd.grad(expected, [qo, ro])
    _close(value, expected.detach(), torch.float64, "sum")
    _close(grad_q, expected_q, torch.float64, "gradient of the queries")
    _close(grad_r, expected_r, torch.float64, "gradient of the set")


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_pairs_exactly_at_a_margin_pass_no_gradient(backend_device):
    """relu's gradient at 0 is 0 (torch's and pytorch-metric-learning's): a negative pair at
    exactly neg_margin and a positive pair at exactly pos_margin (distances exact in the matrix
    form: |q|^2 + |r|^2 - 2 q.r of small integers) add no gradient."""
    backend, device = backend_device
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 2.0]], dtype=torch.float64, device=device,
                     requires_grad=True)
    y = torch.tensor([0, 1, 2, 2], device=device)  # (0, 1) at 1 = neg_margin; (2, 3) positives at 3 = pos_margin
    for reduction in ("sum", "mean", "avg_nonzero"):
        check(lambda t: fastloss.batch_contrastive_loss(t, y, 3.0, 1.0, normalize=False, reduction=reduction,
                                                        backend=backend),
              lambda t: oracle_contrastive(t, y.cpu(), 3.0, 1.0, normalize=False, reduction=reduction), [x],
              torch.float64, f"margin ties {reduction}")
