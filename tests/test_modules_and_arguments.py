"""Every module and every argument against an oracle fastloss did not write: torch's own
function or module where torch has the loss, else the formula written in tests/loss_cases.py
(Hadsell et al. for the contrastive loss, MAE's forward_loss for the masked patch MSE,
pytorch-metric-learning's definitions for the in-batch losses, the cross-entropy of the
materialised logits for InfoNCE and NT-Xent). Values and gradients of every differentiable
argument, in float64, on every backend runnable here; also the deprecated size_average/reduce
pair, gradients of the weight and of the target alone, and non-contiguous rows."""

import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F

import fastloss
from conftest import backend_params
from loss_cases import (batch_contrastive_formula, batch_hard_formula, contrastive_oracle, mae_patch_loss,
                        oracle_info_nce, oracle_nt_xent)

BACKENDS = backend_params()
F64 = torch.float64


def _normal(*shape, device="cpu", seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, dtype=F64, generator=gen) * scale).to(device)


def _compare(fast, oracle, tensors, what, rtol=1e-9, atol=1e-11):
    """fast(*tensors) and oracle(*float64 CPU copies): the value, and with a grad_output of
    non-uniform values, the gradient of every tensor that requires grad."""
    leaves = [t for t in tensors if t.requires_grad]
    copies = [t.detach().cpu().double().requires_grad_(t.requires_grad) for t in tensors]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fast(*tensors)
        expected = oracle(*copies)
    assert out.shape == expected.shape, f"{what}: shape {tuple(out.shape)}, expected {tuple(expected.shape)}"
    torch.testing.assert_close(out.detach().cpu().double(), expected.detach(), rtol=rtol, atol=atol, equal_nan=True,
                               msg=lambda m: f"{what} value: {m}")
    if not leaves:
        return
    g = torch.rand(expected.shape, dtype=F64, generator=torch.Generator().manual_seed(1)) + 0.5
    got = torch.autograd.grad(out, leaves, g.to(out.device, out.dtype), allow_unused=True)
    want = torch.autograd.grad(expected, [c for c in copies if c.requires_grad], g, allow_unused=True)
    for k, (a, b) in enumerate(zip(got, want)):
        a = torch.zeros_like(leaves[k]) if a is None else a
        b = torch.zeros_like(leaves[k].cpu()) if b is None else b
        torch.testing.assert_close(a.cpu().double(), b, rtol=rtol, atol=atol, equal_nan=True,
                                   msg=lambda m: f"{what} gradient {k}: {m}")


# ---- the deprecated size_average / reduce pair, against torch's own handling ----

LEGACY = list(itertools.product([None, True, False], [None, True, False], ["mean", "sum", "none"]))


def _legacy_calls(x, t, w, y_cos):
    """(name, fastloss call, torch call) for every function with size_average/reduce."""
    sig = torch.sigmoid(t)
    return [
        ("mse_loss", lambda **k: fastloss.mse_loss(x, t, **k), lambda **k: F.mse_loss(x, t, **k)),
        ("l1_loss", lambda **k: fastloss.l1_loss(x, t, **k), lambda **k: F.l1_loss(x, t, **k)),
        ("smooth_l1_loss", lambda **k: fastloss.smooth_l1_loss(x, t, beta=0.4, **k),
         lambda **k: F.smooth_l1_loss(x, t, beta=0.4, **k)),
        ("bce_with_logits", lambda **k: fastloss.binary_cross_entropy_with_logits(x, sig, w, **k),
         lambda **k: F.binary_cross_entropy_with_logits(x, sig, w, **k)),
        ("triplet_margin_loss", lambda **k: fastloss.triplet_margin_loss(x, t, w, margin=0.7, **k),
         lambda **k: F.triplet_margin_loss(x, t, w, margin=0.7, **k)),
        ("cosine_embedding_loss", lambda **k: fastloss.cosine_embedding_loss(x, t, y_cos, margin=0.1, **k),
         lambda **k: F.cosine_embedding_loss(x, t, y_cos, margin=0.1, **k)),
    ]


@pytest.mark.parametrize("size_average,reduce,reduction", LEGACY, ids=str)
def test_deprecated_size_average_and_reduce_as_torch(size_average, reduce, reduction):
    x, t, w = _normal(6, 5), _normal(6, 5, seed=1), _normal(6, 5, seed=2).abs() + 0.2
    y_cos = torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0], dtype=F64)
    for name, ours, theirs in _legacy_calls(x, t, w, y_cos):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = theirs(size_average=size_average, reduce=reduce, reduction=reduction)
            got = ours(size_average=size_average, reduce=reduce, reduction=reduction)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")


LEGACY_MODULES = ["MSELoss", "L1Loss", "SmoothL1Loss", "BCEWithLogitsLoss", "TripletMarginLoss", "CosineEmbeddingLoss"]


@pytest.mark.parametrize("size_average,reduce", list(itertools.product([None, True, False], repeat=2)), ids=str)
@pytest.mark.parametrize("name", LEGACY_MODULES)
def test_modules_deprecated_arguments_as_torch(name, size_average, reduce):
    x, t, w = _normal(6, 5), _normal(6, 5, seed=1), _normal(6, 5, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = getattr(fastloss, name)(size_average=size_average, reduce=reduce)
        theirs = getattr(torch.nn, name)(size_average=size_average, reduce=reduce)
    assert ours.reduction == theirs.reduction
    args = {"BCEWithLogitsLoss": (x, torch.sigmoid(t)), "TripletMarginLoss": (x, t, w),
            "CosineEmbeddingLoss": (x, t, torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0], dtype=F64))}.get(name, (x, t))
    torch.testing.assert_close(ours(*args), theirs(*args), rtol=1e-12, atol=1e-12)


# ---- every module, every argument, every backend ----

def _pointwise_module_cases(reduction):
    w = _normal(4, 7, seed=5).abs() + 0.3
    pw = _normal(7, seed=6).abs() + 0.5
    return [
        ("MSELoss", {"reduction": reduction}),
        ("L1Loss", {"reduction": reduction}),
        ("SmoothL1Loss", {"reduction": reduction, "beta": 0.35}),
        ("HuberLoss", {"reduction": reduction, "delta": 0.45}),
        ("BCEWithLogitsLoss", {"reduction": reduction, "weight": w, "pos_weight": pw}),
    ]


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_pointwise_modules_as_torch_modules(backend_device, reduction):
    backend, device = backend_device
    for name, kwargs in _pointwise_module_cases(reduction):
        x = _normal(4, 7, device=device).requires_grad_()
        t = torch.sigmoid(_normal(4, 7, seed=1)) if name == "BCEWithLogitsLoss" else _normal(4, 7, seed=1)
        t = t.to(device).requires_grad_()
        ours = getattr(fastloss, name)(**{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in kwargs.items()},
                                       backend=backend)
        theirs = getattr(torch.nn, name)(**kwargs)
        _compare(ours, theirs, [x, t], f"{name} {reduction}")


def _row_module_cases(reduction, device):
    labels = (torch.rand(9, generator=torch.Generator().manual_seed(2)) < 0.5).to(F64).to(device)
    cos_y = torch.tensor([1.0, -1.0] * 4 + [1.0], dtype=F64, device=device)
    return [
        (lambda b: fastloss.TripletMarginLoss(margin=0.8, p=1.0, eps=1e-3, swap=True, reduction=reduction, backend=b),
         torch.nn.TripletMarginLoss(margin=0.8, p=1.0, eps=1e-3, swap=True, reduction=reduction), 3, None),
        (lambda b: fastloss.TripletMarginLoss(margin=2.5, p=3.0, reduction=reduction, backend=b),
         torch.nn.TripletMarginLoss(margin=2.5, p=3.0, reduction=reduction), 3, None),
        (lambda b: fastloss.CosineEmbeddingLoss(margin=-0.3, reduction=reduction, backend=b),
         torch.nn.CosineEmbeddingLoss(margin=-0.3, reduction=reduction), 2, cos_y),
    ] + [
        (lambda b, d=d, m=m: fastloss.ContrastiveLoss(margin=m, distance=d, reduction=reduction, eps=1e-4, backend=b),
         lambda x1, x2, y, d=d, m=m: contrastive_oracle(x1, x2, y, m, d, reduction, eps=1e-4), 2, labels)
        for d, m in (("euclidean", 4.0), ("manhattan", 9.0), ("cosine", 0.8))
    ]


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_row_modules_as_torch_or_the_paper(backend_device, reduction):
    backend, device = backend_device
    for k, (ours, theirs, n, label) in enumerate(_row_module_cases(reduction, device)):
        rows = [_normal(9, 6, seed=s, device=device).requires_grad_() for s in range(n)]
        extra = [] if label is None else [label]
        _compare(ours(backend), theirs, rows + extra, f"row module {k} {reduction}")


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("norm_target", [False, True])
def test_masked_mse_module_as_mae(backend_device, norm_target):
    backend, device = backend_device
    x = _normal(3, 5, 11, device=device).requires_grad_()
    t = _normal(3, 5, 11, seed=1, device=device, scale=2.0) + 0.7
    mask = (torch.rand(3, 5, generator=torch.Generator().manual_seed(4)) < 0.6).to(device)
    eps = 0.25  # large: an eps ignored or misplaced shows
    module = fastloss.MaskedMSELoss(norm_target=norm_target, eps=eps, backend=backend)
    _compare(lambda a: module(a, t, mask), lambda a: mae_patch_loss(a, t.cpu(), mask.cpu(), norm_target, eps),
             [x], f"MaskedMSELoss norm_target={norm_target}")


def _labels(n, classes=3):
    return torch.arange(n) % classes


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_in_batch_modules_as_their_definitions(backend_device):
    backend, device = backend_device
    x = _normal(10, 6, device=device).requires_grad_()
    r = _normal(7, 6, seed=1, device=device).requires_grad_()
    y, ry = _labels(10).to(device), _labels(7, 2).to(device)
    contrastive = fastloss.BatchContrastiveLoss(0.2, 1.1, backend=backend)
    _compare(lambda a: contrastive(a, y), lambda a: batch_contrastive_formula(a, y.cpu(), 0.2, 1.1), [x],
             "BatchContrastiveLoss")
    summed = fastloss.BatchContrastiveLoss(0.1, 1.3, reduction="sum", backend=backend)
    _compare(lambda a, b: summed(a, y, b, ry),
             lambda a, b: batch_contrastive_formula(a, y.cpu(), 0.1, 1.3, ref=b, ref_y=ry.cpu(), reduction="sum"),
             [x, r], "BatchContrastiveLoss with a reference set")
    averaged = fastloss.BatchContrastiveLoss(0.1, 1.3, reduction="mean", backend=backend)
    _compare(lambda a, b: averaged(a, y, b, ry),
             lambda a, b: batch_contrastive_formula(a, y.cpu(), 0.1, 1.3, ref=b, ref_y=ry.cpu(), reduction="mean"),
             [x, r], "BatchContrastiveLoss mean")
    _compare(lambda a: fastloss.BatchContrastiveLoss(0.3, 0.8, reduction="mean", backend=backend)(a, y),
             lambda a: batch_contrastive_formula(a, y.cpu(), 0.3, 0.8, reduction="mean"), [x], "mean in the batch")
    hard = fastloss.BatchHardTripletLoss(0.3, backend=backend)
    _compare(lambda a: hard(a, y), lambda a: batch_hard_formula(a, y.cpu(), 0.3), [x], "BatchHardTripletLoss")
    soft = fastloss.BatchHardTripletLoss(soft=True, reduction="mean", backend=backend)
    _compare(lambda a: soft(a, y), lambda a: batch_hard_formula(a, y.cpu(), 0.0, soft=True, reduction="mean"), [x],
             "BatchHardTripletLoss soft")


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_modules_as_cross_entropy(backend_device, reduction):
    backend, device = backend_device
    q = _normal(6, 5, device=device, scale=0.6).requires_grad_()
    k = _normal(6, 5, seed=1, device=device, scale=0.6).requires_grad_()
    for symmetric, normalize in itertools.product([False, True], repeat=2):
        module = fastloss.InfoNCELoss(0.3, symmetric=symmetric, normalize=normalize, reduction=reduction,
                                      backend=backend)
        _compare(module, lambda a, b: oracle_info_nce(a, b, 0.3, symmetric, normalize, reduction), [q, k],
                 f"InfoNCELoss symmetric={symmetric} normalize={normalize} {reduction}")
    # a per-call temperature wins over the module's, and gets its gradient
    module = fastloss.InfoNCELoss(0.3, reduction=reduction, backend=backend)
    temperature = torch.tensor(0.45, dtype=F64, device=device, requires_grad=True)
    _compare(lambda a, b, tau: module(a, b, tau), lambda a, b, tau: oracle_info_nce(a, b, tau, False, False, reduction),
             [q, k, temperature], f"InfoNCELoss temperature per call {reduction}")
    nt = fastloss.NTXentLoss(0.4, reduction=reduction, backend=backend)
    _compare(nt, lambda a, b: oracle_nt_xent(a, b, 0.4, reduction), [q, k], f"NTXentLoss {reduction}")


# ---- gradients of the weight, and of the target alone ----

@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("loss", ["mse_loss", "l1_loss", "huber_loss"])
def test_weight_gradient_as_torch(backend_device, reduction, loss):
    backend, device = backend_device
    x = _normal(5, 8, device=device).requires_grad_()
    t = _normal(5, 8, seed=1, device=device).requires_grad_()
    w = (_normal(5, 8, seed=2, device=device).abs() + 0.2).requires_grad_()
    _compare(lambda a, b, c: getattr(fastloss, loss)(a, b, reduction=reduction, weight=c, backend=backend),
             lambda a, b, c: getattr(F, loss)(a, b, reduction=reduction, weight=c), [x, t, w], f"{loss} weight")


def _only_second_cases(device):
    labels = (torch.rand(8, generator=torch.Generator().manual_seed(3)) < 0.5).to(F64).to(device)
    cos_y = torch.tensor([1.0, -1.0] * 4, dtype=F64, device=device)
    pointwise = [(name, lambda a, b, name=name, **k: getattr(fastloss, name)(a, b, **k),
                  lambda a, b, name=name: getattr(F, name)(a, b))
                 for name in ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss")]
    return pointwise + [
        ("binary_cross_entropy_with_logits", lambda a, b, **k: fastloss.binary_cross_entropy_with_logits(a, b.sigmoid(), **k),
         lambda a, b: F.binary_cross_entropy_with_logits(a, b.sigmoid())),
        ("contrastive_loss", lambda a, b, **k: fastloss.contrastive_loss(a, b, labels, 3.0, "manhattan", **k),
         lambda a, b: contrastive_oracle(a, b, labels.cpu(), 3.0, "manhattan")),
        ("cosine_embedding_loss", lambda a, b, **k: fastloss.cosine_embedding_loss(a, b, cos_y, 0.2, **k),
         lambda a, b: F.cosine_embedding_loss(a, b, cos_y.cpu(), 0.2)),
    ]


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_only_the_target_requires_grad(backend_device):
    """The second operand alone requires grad (a frozen prediction, a learned target)."""
    backend, device = backend_device
    for name, ours, theirs in _only_second_cases(device):
        x = _normal(8, 6, device=device)
        t = _normal(8, 6, seed=1, device=device).requires_grad_()
        _compare(lambda a, b: ours(a, b, backend=backend), theirs, [x, t], f"{name}, only target")
    a, p, n = (_normal(8, 6, seed=s, device=device) for s in range(3))
    for which in range(3):  # one of anchor, positive, negative at a time
        rows = [a, p, n]
        rows[which] = rows[which].clone().requires_grad_()
        _compare(lambda *r: fastloss.triplet_margin_loss(*r, margin=1.5, swap=True, backend=backend),
                 lambda *r: F.triplet_margin_loss(*r, margin=1.5, swap=True), rows, f"triplet, only tensor {which}")
    x = _normal(2, 4, 9, device=device)
    t = _normal(2, 4, 9, seed=1, device=device).requires_grad_()
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]], dtype=F64, device=device)
    for norm in (False, True):
        _compare(lambda a, b: fastloss.masked_mse_loss(a, b, mask, norm_target=norm, backend=backend),
                 lambda a, b: mae_patch_loss(a, b, mask.cpu(), norm), [x, t], f"masked_mse, only target, norm={norm}")


# ---- non-contiguous rows ----

@pytest.mark.parametrize("backend_device", BACKENDS)
def test_non_contiguous_rows(backend_device):
    """Transposed, strided and expanded views, as a model's slices hand them over."""
    backend, device = backend_device
    base = [_normal(12, 20, seed=s, device=device) for s in range(3)]
    leaves = [b.clone().requires_grad_() for b in base]
    labels = (torch.rand(10, generator=torch.Generator().manual_seed(8)) < 0.5).to(F64).to(device)
    cos_y = torch.tensor([1.0, -1.0] * 5, dtype=F64, device=device)
    views = [lambda v: v[:10, ::2], lambda v: v[1:11, 3:9], lambda v: v.t()[:10, :10]]
    for k, view in enumerate(views):
        assert not view(leaves[0]).is_contiguous()
        for distance in ("euclidean", "manhattan", "cosine"):
            _compare(lambda x, y: fastloss.contrastive_loss(view(x), view(y), labels, 2.0, distance, backend=backend),
                     lambda x, y: contrastive_oracle(view(x), view(y), labels.cpu(), 2.0, distance),
                     leaves[:2], f"contrastive {distance} view {k}")
        _compare(lambda x, y, z: fastloss.triplet_margin_loss(view(x), view(y), view(z), swap=True, backend=backend),
                 lambda x, y, z: F.triplet_margin_loss(view(x), view(y), view(z), swap=True), leaves,
                 f"triplet view {k}")
        _compare(lambda x, y: fastloss.cosine_embedding_loss(view(x), view(y), cos_y, 0.1, backend=backend),
                 lambda x, y: F.cosine_embedding_loss(view(x), view(y), cos_y.cpu(), 0.1), leaves[:2],
                 f"cosine embedding view {k}")
    # one embedding broadcast against every row (expand: stride 0)
    one = _normal(1, 20, seed=4, device=device).requires_grad_()
    _compare(lambda x, y: fastloss.triplet_margin_loss(x.expand(12, 20), y, y.flip(0), backend=backend),
             lambda x, y: F.triplet_margin_loss(x.expand(12, 20), y, y.flip(0)), [one, leaves[0]], "triplet expanded")
    patches = _normal(4, 6, 10, seed=5, device=device)
    leaf = patches.clone().requires_grad_()
    target = _normal(6, 4, 10, seed=6, device=device).transpose(0, 1)  # (4, 6, 10), not contiguous
    mask = (torch.rand(6, 4, generator=torch.Generator().manual_seed(7)) < 0.7).to(device).t()
    for norm in (False, True):
        _compare(lambda x: fastloss.masked_mse_loss(x.transpose(0, 1).transpose(0, 1)[:, ::2], target[:, ::2],
                                                    mask[:, ::2], norm_target=norm, backend=backend),
                 lambda x: mae_patch_loss(x[:, ::2], target[:, ::2].cpu(), mask[:, ::2].cpu(), norm),
                 [leaf], f"masked_mse non-contiguous norm={norm}")


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_soft_label_gradients(backend_device, reduction):
    """Soft labels in [0, 1] that require grad (a learned similarity): the gradient of every
    operand, the label's too, against Hadsell et al.'s formula, in each distance."""
    backend, device = backend_device
    for distance, margin in (("euclidean", 3.0), ("manhattan", 7.0), ("cosine", 0.9)):
        x1 = _normal(9, 5, device=device).requires_grad_()
        x2 = _normal(9, 5, seed=1, device=device).requires_grad_()
        y = torch.rand(9, dtype=F64, generator=torch.Generator().manual_seed(2)).to(device).requires_grad_()
        _compare(lambda a, b, c: fastloss.contrastive_loss(a, b, c, margin, distance, reduction, backend=backend),
                 lambda a, b, c: contrastive_oracle(a, b, c, margin, distance, reduction), [x1, x2, y],
                 f"soft labels {distance} {reduction}")


def test_module_defaults_are_the_papers_and_torchs():
    """Modules built without arguments: torch's defaults for torch's losses; Hadsell's margin 1
    with the Euclidean distance; MAE's patch loss without normalisation (eps 1e-6 when on);
    pytorch-metric-learning's margins 0 and 1; the batch-hard margin 0.05; InfoNCE at 0.07 and
    SimCLR's 0.5."""
    x, t, w = _normal(6, 5), _normal(6, 5, seed=1), _normal(6, 5, seed=2)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0], dtype=F64)
    for name in ("MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss"):
        torch.testing.assert_close(getattr(fastloss, name)()(x, t), getattr(torch.nn, name)()(x, t))
    torch.testing.assert_close(fastloss.BCEWithLogitsLoss()(x, y[:, None].expand(6, 5)),
                               torch.nn.BCEWithLogitsLoss()(x, y[:, None].expand(6, 5)))
    torch.testing.assert_close(fastloss.TripletMarginLoss()(x, t, w), torch.nn.TripletMarginLoss()(x, t, w))
    torch.testing.assert_close(fastloss.CosineEmbeddingLoss()(x, t, 2 * y - 1), torch.nn.CosineEmbeddingLoss()(x, t, 2 * y - 1))
    torch.testing.assert_close(fastloss.ContrastiveLoss()(x, t, y), contrastive_oracle(x, t, y, 1.0, "euclidean"))
    patches, target = _normal(2, 3, 4), _normal(2, 3, 4, seed=1) * 1e-3  # tiny variance: eps shows
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=F64)
    torch.testing.assert_close(fastloss.MaskedMSELoss()(patches, target, mask), mae_patch_loss(patches, target, mask))
    torch.testing.assert_close(fastloss.MaskedMSELoss(norm_target=True)(patches, target, mask),
                               mae_patch_loss(patches, target, mask, True, 1e-6))
    labels = _labels(6)
    torch.testing.assert_close(fastloss.BatchContrastiveLoss()(x, labels), batch_contrastive_formula(x, labels, 0.0, 1.0))
    torch.testing.assert_close(fastloss.BatchHardTripletLoss()(x, labels), batch_hard_formula(x, labels, 0.05))
    torch.testing.assert_close(fastloss.InfoNCELoss()(x, t), oracle_info_nce(x, t, 0.07))
    torch.testing.assert_close(fastloss.NTXentLoss()(x, t), oracle_nt_xent(x, t, 0.5))


def test_module_reprs_name_their_settings():
    assert repr(fastloss.ContrastiveLoss(margin=2.0, distance="manhattan", reduction="sum")) == \
        "ContrastiveLoss(margin=2.0, distance='manhattan', reduction='sum', backend='auto')"
    assert repr(fastloss.MaskedMSELoss(norm_target=True, eps=1e-4)) == "MaskedMSELoss(norm_target=True, eps=0.0001, backend='auto')"
    assert repr(fastloss.BatchContrastiveLoss(0.1, 0.9, normalize=False, reduction="mean")) == \
        "BatchContrastiveLoss(pos_margin=0.1, neg_margin=0.9, normalize=False, reduction='mean', backend='auto')"
    assert repr(fastloss.BatchHardTripletLoss(0.2, soft=True)) == \
        "BatchHardTripletLoss(margin=0.2, normalize=True, soft=True, reduction='avg_nonzero', backend='auto')"
    assert repr(fastloss.InfoNCELoss(0.1, symmetric=True)) == \
        "InfoNCELoss(temperature=0.1, symmetric=True, normalize=False, reduction='mean', backend='auto')"
    learned = fastloss.InfoNCELoss(torch.nn.Parameter(torch.tensor(0.25)))
    assert repr(learned) == "InfoNCELoss(temperature=tensor(0.25), symmetric=False, normalize=False, reduction='mean', backend='auto')"
    assert repr(fastloss.NTXentLoss(torch.tensor(0.125), reduction="sum")) == \
        "NTXentLoss(temperature=tensor(0.125), reduction='sum', backend='auto')"
    assert repr(fastloss.NTXentLoss()) == "NTXentLoss(temperature=0.5, reduction='mean', backend='auto')"
    assert repr(fastloss.TripletMarginLoss(backend="Torch")) == "TripletMarginLoss(backend='torch')"


def _ops_that_ran(call):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    return {e.name for e in prof.events() if e.name.startswith("fastloss::")}


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_the_backend_asked_for_is_the_one_that_runs(backend_device):
    """Each loss family's op of the chosen backend runs, forward and backward (the C++ ops on
    "cpu", their Triton twins on "triton", none on "torch"): equal values alone could not tell
    one backend from another."""
    backend, device = backend_device
    x = _normal(6, 4, device=device).requires_grad_()
    t = _normal(6, 4, seed=1, device=device)
    labels = _labels(6).to(device)
    mask = torch.ones(6, device=device)
    families = {
        "pointwise_loss": lambda: fastloss.mse_loss(x, t, backend=backend).backward(),
        "row_loss": lambda: fastloss.triplet_margin_loss(x, t, t.flip(0), backend=backend).backward(),
        "row_loss (one pair)": lambda: fastloss.contrastive_loss(x[0], t[0], labels[0], backend=backend).backward(),
        "masked_mse_loss": lambda: fastloss.masked_mse_loss(x, t, mask, backend=backend).backward(),
        "batch_pair_loss": lambda: fastloss.batch_contrastive_loss(x, labels, backend=backend).backward(),
        "info_nce_stats": lambda: fastloss.info_nce_loss(x, t, backend=backend).backward(),
    }
    for op, call in families.items():
        ran = _ops_that_ran(call)
        if backend == "torch":
            assert not ran, (op, ran)
        else:
            expected = f"fastloss::{op.split()[0]}" + ("_triton" if backend == "triton" else "")
            assert expected in ran, (op, ran)
            assert all(name.rstrip("_").endswith("_triton") == (backend == "triton") for name in ran), (op, ran)
