"""Contrastive, triplet margin and cosine embedding losses against torch (float64 CPU
autograd through the plain formulas), on every backend runnable here."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

import fastloss
from conftest import backend_params
from loss_cases import contrastive_oracle
from helpers import assert_compiled_matches_eager, DTYPES, assert_close_to_reference, poisoned_outputs, random

KERNEL_BACKENDS = [p for p in backend_params() if p.values[0][0] != "torch"]
SHAPES = [(0, 5), (1, 1), (7, 13), (33, 300), (3, 4099), (2, 16384), (9,)]


def emb(shape, dtype, device):
    """Embedding-like rows: entries of size 1/sqrt(D), so distances stay O(1) in every dtype
    (float16 cannot hold a squared distance of 4099 unit-variance values)."""
    return random(shape, dtype, device, requires_grad=True, scale=shape[-1] ** -0.5 if shape[-1] else 1.0)


def run_case(backend, device, dtype, shape, case, grad_out=None):
    """case(fn_inputs) -> (fastloss call, torch reference call) on the same tensors."""
    name, make = case
    inputs, fast, ref = make(shape, dtype, device)
    with poisoned_outputs(device):
        out = fast(*inputs, backend)
    cpu64 = [t.detach().cpu().double().requires_grad_(t.requires_grad) for t in inputs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ref(*cpu64)
    # The "torch" backend is torch's own float32 arithmetic, whose sums over thousands of values
    # (a triplet loss is a difference of two of them) are held to torch's precision, not ours.
    loose = backend == "torch" and dtype == torch.float32 and shape[-1] > 1000
    check = (lambda a, b, what: torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-3)) if loose else \
        (lambda a, b, what: assert_close_to_reference(a, b, dtype, what))
    check(out.detach().cpu(), expected.detach(), f"{name} loss")
    # Evaluation (no gradient asked) takes its own path in the CPU kernel (rows in groups, one
    # finish per group): the same values, and on the CPU the same bits as the training forward.
    with torch.no_grad(), poisoned_outputs(device):
        evaluated = fast(*inputs, backend)
    check(evaluated.cpu(), expected.detach(), f"{name} loss, evaluation")
    if backend == "cpu":
        assert torch.equal(evaluated.isnan(), out.detach().isnan()), f"{name}: evaluation NaNs differ"
        assert torch.equal(evaluated[~evaluated.isnan()], out.detach()[~out.detach().isnan()]), \
            f"{name}: evaluation and training forward differ"
    if out.numel() == 0 or not expected.requires_grad:
        return
    g = torch.rand(expected.shape, dtype=torch.float64) + 0.5 if grad_out is None else grad_out
    grads = torch.autograd.grad(out, [t for t in inputs if t.requires_grad], g.to(dtype).to(device))
    ref_grads = torch.autograd.grad(expected, [t for t in cpu64 if t.requires_grad], g.to(dtype).double())
    for k, (a, b) in enumerate(zip(grads, ref_grads)):
        assert torch.isfinite(a).all(), f"{name}: gradient {k} not finite"
        check(a.cpu(), b, f"{name} grad {k}")


def contrastive(distance, margin=1.0, label="float", reduction="mean", same=False, zeros=False):
    def make(shape, dtype, device):
        x1 = emb(shape, dtype, device)
        x2 = x1.detach().clone().requires_grad_() if same else emb(shape, dtype, device)
        if zeros:
            with torch.no_grad():
                x1[..., :] = 0
        n = shape[:-1]
        y = {"float": torch.rand(n), "bool": torch.rand(n) < 0.5, "int": torch.randint(0, 2, n)}[label].to(device)
        fast = lambda a, b, be: fastloss.contrastive_loss(a, b, y, margin, distance, reduction, backend=be)  # noqa: E731
        ref = lambda a, b: contrastive_oracle(a, b, y.cpu(), margin, distance, reduction)  # noqa: E731
        return (x1, x2), fast, ref
    return (f"contrastive-{distance}", make)


def triplet(p=2.0, swap=False, reduction="mean", margin=1.0):
    def make(shape, dtype, device):
        a, pos, neg = (emb(shape, dtype, device) for _ in range(3))
        fast = lambda x, y, z, be: fastloss.triplet_margin_loss(x, y, z, margin=margin, p=p, swap=swap,  # noqa: E731
                                                                  reduction=reduction, backend=be)
        ref = lambda x, y, z: F.triplet_margin_loss(x, y, z, margin=margin, p=p, swap=swap, reduction=reduction)  # noqa: E731
        return (a, pos, neg), fast, ref
    return (f"triplet-p{p}-swap{swap}", make)


def cosine_embedding(margin=0.0, reduction="mean", zeros=False):
    def make(shape, dtype, device):
        x1, x2 = emb(shape, dtype, device), emb(shape, dtype, device)
        if zeros:
            with torch.no_grad():
                x2[..., :] = 0
        n = shape[:-1]
        y = torch.tensor([1.0, -1.0, 0.0, 2.0]).repeat(max(1, (n[0] if n else 1) // 4 + 1))[: (n[0] if n else 1)]
        y = y.reshape(n).to(device)
        fast = lambda a, b, be: fastloss.cosine_embedding_loss(a, b, y, margin=margin, reduction=reduction, backend=be)  # noqa: E731
        ref = lambda a, b: F.cosine_embedding_loss(a, b, y.cpu().double(), margin=margin, reduction=reduction)  # noqa: E731
        return (x1, x2), fast, ref
    return ("cosine-embedding", make)


CASES = [contrastive("euclidean"), contrastive("manhattan"), contrastive("cosine", margin=0.5),
         triplet(2.0), triplet(1.0, swap=True), triplet(3.0, swap=True), cosine_embedding(0.2)]


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_matches_torch(backend_device, dtype, shape, case):
    backend, device = backend_device
    run_case(backend, device, dtype, shape, case)


def cases_reduced(reduction):
    return [contrastive(d, margin=m, reduction=reduction) for d, m in (("euclidean", 1.0), ("manhattan", 3.0),
                                                                      ("cosine", 0.5))] + \
        [triplet(2.0, reduction=reduction), triplet(1.0, swap=True, reduction=reduction),
         triplet(3.0, swap=True, reduction=reduction), cosine_embedding(0.2, reduction=reduction)]


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", range(7))
@pytest.mark.parametrize("shape", [(17, 23), (1, 5), (3, 4099)], ids=str)
def test_reductions(backend_device, reduction, case, shape):
    """Each reduction against torch's (or the paper's formula's) own, not a Python sum of "none"."""
    backend, device = backend_device
    run_case(backend, device, torch.float32, shape, cases_reduced(reduction)[case])


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("distance", ["euclidean", "manhattan", "cosine"])
@pytest.mark.parametrize("margin", [0.0, 1.0, 50.0, -0.5])
@pytest.mark.parametrize("label", ["float", "bool", "int"])
def test_contrastive_margins_and_labels(backend_device, distance, margin, label):
    backend, device = backend_device
    run_case(backend, device, torch.float64, (11, 9), contrastive(distance, margin, label))


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("distance", ["euclidean", "manhattan", "cosine"])
@pytest.mark.parametrize("d", [1, 5, 257])
def test_contrastive_identical_pairs(backend_device, distance, d):
    backend, device = backend_device
    run_case(backend, device, torch.float64, (6, d), contrastive(distance, same=True))
    if distance == "euclidean":  # d = eps * sqrt(D)
        x = random((3, d), torch.float64, device)
        y = torch.ones(3, device=device)
        loss = fastloss.contrastive_loss(x, x, y, reduction="none", backend=backend)
        torch.testing.assert_close(loss.cpu(), torch.full((3,), 0.5 * (1e-6 * d ** 0.5) ** 2, dtype=torch.float64))


@pytest.mark.parametrize("backend_device", backend_params())
def test_zero_vectors_for_cosine(backend_device):
    backend, device = backend_device
    run_case(backend, device, torch.float64, (5, 8), contrastive("cosine", zeros=True))
    # margin 0.2: cos = 0 with a zero vector, so margin 0 would sit on the clamp's boundary,
    # where torch versions disagree (test_clamp_boundary_passes_no_gradient covers it)
    run_case(backend, device, torch.float64, (8, 8), cosine_embedding(0.2, zeros=True))


TORCH_2_14 = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 14)


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
def test_clamp_boundary_passes_no_gradient(backend_device):
    """At an exact tie of the margin clamp, torch 2.14 passes no gradient (its clamp_min gives
    0 at the boundary; older torch gave 1): fastloss follows 2.14 whatever torch is installed."""
    backend, device = backend_device
    f64 = dict(dtype=torch.float64, device=device)
    a = torch.zeros(1, 2, **f64, requires_grad=True)
    pos = torch.tensor([[1.0, 0.0]], **f64)  # d(a, p) = 1
    neg = torch.tensor([[0.0, 3.0]], **f64)  # d(a, n) = 3: 1 - 3 + margin 2 = 0 exactly (eps 0)
    # orthogonal rows: cos = 0 exactly = margin for target -1 (both gradients depend on the rule)
    x1 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], **f64, requires_grad=True)
    x2 = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, 0.5]], **f64, requires_grad=True)
    target = -torch.ones(2, **f64)
    calls = [
        ((a,), lambda m: m.triplet_margin_loss(a, pos, neg, margin=2.0, eps=0.0, **kw(m))),
        ((x1, x2), lambda m: m.cosine_embedding_loss(x1, x2, target, margin=0.0, **kw(m))),
    ]

    def kw(module):
        return {"backend": backend} if module is fastloss else {}

    for leaves, call in calls:
        loss = call(fastloss)
        grads = torch.autograd.grad(loss, leaves)
        assert float(loss) == 0.0
        for grad in grads:
            assert torch.equal(grad.cpu(), torch.zeros_like(grad.cpu())), grad
        if TORCH_2_14:  # the rule is torch 2.14's own
            for ours, theirs in zip(grads, torch.autograd.grad(call(F), leaves)):
                assert torch.equal(theirs.cpu(), ours.cpu())


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("p", [0.5, 1.0, 1.5, 2.0, 4.0])
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("margin", [0.05, 1.0, 20.0])
def test_triplet_norms_and_swap(backend_device, p, swap, margin):
    backend, device = backend_device
    run_case(backend, device, torch.float64, (13, 21), triplet(p, swap, margin=margin))


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("margin", [-0.5, 0.0, 0.5])
def test_cosine_embedding_targets_and_margins(backend_device, margin):
    backend, device = backend_device
    run_case(backend, device, torch.float64, (16, 12), cosine_embedding(margin))


def test_sentence_transformers_mapping():
    # sentence-transformers' ContrastiveLoss (default distance 1 - cosine similarity, margin 0.5,
    # size_average=True): 0.5 * (y * d^2 + (1 - y) * relu(margin - d)^2), averaged
    x1, x2 = torch.randn(40, 32, dtype=torch.float64), torch.randn(40, 32, dtype=torch.float64)
    labels = torch.randint(0, 2, (40,))
    d = 1 - F.cosine_similarity(x1, x2)
    theirs = (0.5 * (labels.double() * d.pow(2) + (1 - labels).double() * F.relu(0.5 - d).pow(2))).mean()
    ours = fastloss.contrastive_loss(x1, x2, labels, margin=0.5, distance="cosine")
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_gradcheck_float64(backend_device, case):
    backend, device = backend_device
    inputs, fast, _ = case[1]((4, 6), torch.float64, device)
    assert torch.autograd.gradcheck(lambda *a: fast(*a, backend), inputs)


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
@pytest.mark.parametrize("loss", range(7))
@pytest.mark.parametrize("reduction", [0, 1, 2])
def test_opcheck(backend_device, loss, reduction):
    backend, device = backend_device
    op = torch.ops.fastloss.row_loss_triton if backend == "triton" else torch.ops.fastloss.row_loss
    a, b, c = (random((5, 7), torch.float32, device) for _ in range(3))
    label = torch.rand(5, device=device)
    third = c if loss in (3, 4, 5) else None
    opcheck(op, (a, b, third, label, loss, reduction, 0.7, 1e-6, 3.0, True, True, True, third is not None))


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_bitwise_deterministic(backend_device, case):
    backend, device = backend_device
    inputs, fast, _ = case[1]((50, 257), torch.float32, device)

    def run():
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        out = fast(*leaves, backend)
        out.backward()
        return [out.detach()] + [t.grad for t in leaves]

    for x, y in zip(run(), run()):
        assert torch.equal(x, y)


@pytest.mark.parametrize("backend_device", [p for p in KERNEL_BACKENDS if p.id != "triton-interpreted"])
def test_more_than_2_to_the_24_rows(backend_device):
    """N = 2^24 + 3 rows, past float32's exact integers: a row index held in float32, or a
    float32 running sum over the rows, shows (a float32 row count alone, off by 6e-8, would
    not: that is below float32 tolerances). Not under the Triton interpreter: it runs one
    Python program per row, hours at this size, and its integers are numpy's int64 anyway."""
    backend, device = backend_device
    n, d, margin = (1 << 24) + 3, 2, 1.5
    x1 = torch.randn(n, d, device=device, requires_grad=True)
    x2 = torch.randn(n, d, device=device)
    y = (torch.rand(n, device=device) < 0.5).float()
    loss = fastloss.contrastive_loss(x1, x2, y, margin=margin, backend=backend)
    (grad,) = torch.autograd.grad(loss, x1)
    # the plain formula in float64, its gradient written out (autograd would need several GB)
    diff = x1.detach().double() - x2.double() + 1e-6
    dist = diff.norm(dim=1)
    hinge = (margin - dist).clamp_min(0)
    y64 = y.double()
    expected = (0.5 * (y64 * dist ** 2 + (1 - y64) * hinge ** 2)).mean()
    expected_grad = ((y64 * dist - (1 - y64) * hinge) / dist / n)[:, None] * diff
    torch.testing.assert_close(loss.double(), expected, rtol=2e-6, atol=0)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-5, atol=1e-13)


@pytest.mark.parametrize("d", [512, 515], ids=["rows-on-cache-lines", "rows-off-cache-lines"])
def test_cpu_streaming_gradients_match_the_cached_path(d):
    """Gradients of 32 MiB and more are written with streaming stores (kStreamingBytes): the
    same bits as the ordinary stores of a smaller call. With reduction "sum" each row's gradient
    is its own, so the first rows of a big call must equal a small call on those rows, bit for
    bit; D = 515 puts most blocks off a 64-byte boundary, where the kernel falls back."""
    n = (32 << 20) // (4 * d) + 7  # each gradient just over 32 MiB of float32
    x1, x2, x3 = (random((n, d), torch.float32, "cpu", requires_grad=True) for _ in range(3))
    y = (torch.rand(n) < 0.5).float()
    calls = [lambda a, b, c, rows: fastloss.triplet_margin_loss(a[rows], b[rows], c[rows], reduction="sum", backend="cpu"),
             lambda a, b, c, rows: fastloss.contrastive_loss(a[rows], b[rows], y[rows], reduction="sum", backend="cpu")]
    for call in calls:
        big = torch.autograd.grad(call(x1, x2, x3, slice(None)), [x1, x2, x3], allow_unused=True)
        small = torch.autograd.grad(call(x1, x2, x3, slice(0, 1000)), [x1, x2, x3], allow_unused=True)
        for g_big, g_small in zip(big, small):
            if g_big is None:
                assert g_small is None
                continue
            assert torch.equal(g_big[:1000], g_small[:1000])
            assert torch.isfinite(g_big).all() and g_big[-5:].abs().sum() > 0  # the last rows are written


def test_cpu_independent_of_thread_count():
    inputs, fast, _ = triplet(2.0, swap=True)[1]((3000, 64), torch.float32, "cpu")
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            leaves = [t.detach().clone().requires_grad_() for t in inputs]
            out = fast(*leaves, "cpu")
            out.backward()
            results.append([out.detach()] + [t.grad for t in leaves])
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for x, y in zip(results[0], other):
            assert torch.equal(x, y)


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
def test_torch_compile_fullgraph(backend_device):
    backend, device = backend_device
    criterion = fastloss.ContrastiveLoss(margin=2.0, backend=backend)
    triplet_loss = fastloss.TripletMarginLoss(swap=True, backend=backend)

    def step(a, b, c, y):
        return criterion(a * 2, b, y) + triplet_loss(a, b, c) + fastloss.cosine_embedding_loss(a, c, y * 2 - 1, backend=backend)

    a = random((9, 16), torch.float32, device, requires_grad=True)
    b, c = random((9, 16), torch.float32, device), random((9, 16), torch.float32, device)
    y = (torch.rand(9, device=device) < 0.5).float()
    assert_compiled_matches_eager(step, (a, b, c, y), a, backend, device)


def test_modules_match_torch():
    a, p, n = (torch.randn(8, 5) for _ in range(3))
    ours, theirs = fastloss.TripletMarginLoss(margin=0.3, p=1, swap=True), torch.nn.TripletMarginLoss(margin=0.3, p=1, swap=True)
    assert isinstance(ours, torch.nn.TripletMarginLoss)
    torch.testing.assert_close(ours(a, p, n), theirs(a, p, n))
    y = torch.tensor([1.0, -1.0] * 4)
    torch.testing.assert_close(fastloss.CosineEmbeddingLoss(margin=0.1)(a, p, y), torch.nn.CosineEmbeddingLoss(margin=0.1)(a, p, y))
    assert "distance='cosine'" in repr(fastloss.ContrastiveLoss(distance="cosine"))


def test_bad_input():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="margin must be greater than 0, got 0"):
        fastloss.triplet_margin_loss(x, x, x, margin=0.0)
    with pytest.raises(ValueError, match=r"distance must be one of 'euclidean', 'manhattan', 'cosine', got 'l3'"):
        fastloss.contrastive_loss(x, x, torch.ones(4), distance="l3")
    with pytest.raises(ValueError, match=r"x2 must have x1's shape \(4, 3\), got \(5, 3\)"):
        fastloss.contrastive_loss(x, torch.randn(5, 3), torch.ones(4))
    with pytest.raises(ValueError, match=r"x2 must have x1's shape \(4, 3\), got \(4, 2\)"):
        fastloss.contrastive_loss(x, torch.randn(4, 2), torch.ones(4))
    with pytest.raises(ValueError, match=r"target must have shape \(4,\) \(one per row\), got \(4, 1\)"):
        fastloss.contrastive_loss(x, x, torch.ones(4, 1))
    # shapes and dtypes outside the kernels' layout are torch's to accept or refuse
    with pytest.raises(RuntimeError, match=r"fastloss\.triplet_margin_loss \(anchor: float32 \(4, 3\).*"
                                           r"negative: float32 \(3, 3\)\): The size of tensor a \(4\)"):
        fastloss.triplet_margin_loss(x, x, torch.randn(3, 3))
    with pytest.raises(RuntimeError, match=r"fastloss\.triplet_margin_loss .*same number of dimensions"):
        fastloss.triplet_margin_loss(x, x, torch.randn(3))
    with pytest.raises(RuntimeError, match=r"fastloss\.cosine_embedding_loss .*target tensor expected"):
        fastloss.cosine_embedding_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"x1 must be \(\.\.\., D\) rows, got a 0-d tensor"):
        fastloss.contrastive_loss(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0))


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_triplet_swap_tie_splits_the_gradient_as_torch(backend_device, p):
    """positive == anchor: d(a, n) and d(p, n) are equal bit for bit, and torch.minimum's
    backward sends half the gradient to each (the rows are distinct tensors, so the halves land
    on a and on p)."""
    backend, device = backend_device
    a = random((6, 5), torch.float64, device, requires_grad=True)
    pos = a.detach().clone().requires_grad_()
    neg = random((6, 5), torch.float64, device, requires_grad=True)
    out = fastloss.triplet_margin_loss(a, pos, neg, margin=50.0, p=p, swap=True, reduction="sum", backend=backend)
    grads = torch.autograd.grad(out, [a, pos, neg])
    leaves = [t.detach().cpu().clone().requires_grad_() for t in (a, pos, neg)]
    expected = F.triplet_margin_loss(*leaves, margin=50.0, p=p, swap=True, reduction="sum")
    torch.testing.assert_close(out.detach().cpu(), expected.detach())
    for got, want in zip(grads, torch.autograd.grad(expected, leaves)):
        torch.testing.assert_close(got.cpu(), want)
