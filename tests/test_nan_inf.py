"""NaN and infinities exactly as torch: in the inputs, in every scalar argument and in
grad_output, for the loss and every gradient, on every backend runnable here. The oracle is
torch's function (or the loss's formula in torch ops, tests/loss_cases.py) in the same dtype."""

import warnings

import pytest
import torch
import torch.nn.functional as F

import fastloss
from conftest import backend_params
from loss_cases import contrastive_oracle, inputs, mae_patch_loss, masked_cases, pointwise_cases, row_cases

NAN, INF = float("nan"), float("inf")
SPECIALS = (NAN, INF, -INF)


def ids(case):
    return case.name


def _same(actual, expected, what, dtype, exact_specials=True):
    tol = {torch.float64: (1e-10, 1e-12), torch.float32: (2e-5, 1e-6)}[dtype]
    assert actual.shape == expected.shape, what
    if not exact_specials:
        # NaN and infinities in the same places, but which of the two may differ (README)
        assert torch.equal(actual.isfinite(), expected.isfinite()), f"{what}: {actual} against {expected}"
        actual = torch.where(actual.isfinite(), actual, 0)
        expected = torch.where(expected.isfinite(), expected, 0)
    torch.testing.assert_close(actual, expected, rtol=tol[0], atol=tol[1], equal_nan=True,
                               msg=lambda m: f"{what}: {m}")


def _compare(fast, oracle, values, dtype, what, grad_output=None, exact_specials=True):
    """fast and oracle on copies of values: the loss and the gradient of every tensor."""
    a = [v.detach().clone().requires_grad_() for v in values]
    b = [v.detach().clone().requires_grad_() for v in values]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = oracle(*a)
        actual = fast(*b)
    _same(actual.detach(), expected.detach(), f"{what} loss", dtype)
    if grad_output is None:
        gen = torch.Generator().manual_seed(9)
        grad_output = (torch.rand(expected.shape, dtype=torch.float64, generator=gen) + 0.5).to(expected.device, dtype)
    want = torch.autograd.grad(expected, a, grad_output, allow_unused=True)
    got = torch.autograd.grad(actual, b, grad_output, allow_unused=True)
    for k, (g, e) in enumerate(zip(got, want)):
        e = torch.zeros_like(values[k]) if e is None else e
        g = torch.zeros_like(values[k]) if g is None else g
        _same(g, e, f"{what} gradient {k}", dtype, exact_specials)


def _with_specials(values, seed):
    """One NaN, +inf or -inf in most rows, in a random tensor and column; row 0 stays finite."""
    gen = torch.Generator().manual_seed(seed)
    values = [v.detach().clone() for v in values]
    rows = values[0].reshape(-1, values[0].shape[-1]).shape[0]
    rowwise = [i for i, v in enumerate(values) if v.shape == values[0].shape]  # not a label
    for r in range(1, rows):
        k = rowwise[int(torch.randint(0, len(rowwise), (1,), generator=gen))]
        col = int(torch.randint(0, values[0].shape[-1], (1,), generator=gen))
        values[k].view(-1, values[k].shape[-1])[r, col] = SPECIALS[(r + seed) % 3]
    return values


ELEMENT_CASES = pointwise_cases("none") + pointwise_cases("sum") + row_cases("none") + row_cases("sum")


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", ELEMENT_CASES, ids=ids)
def test_special_values_in_the_inputs(backend_device, dtype, case):
    backend, device = backend_device
    for seed in range(4):
        values = _with_specials(inputs(case, dtype, seed=seed, shape=(7, 6), device=device), seed)
        _compare(lambda *a: case.fast(*a, backend=backend), case.oracle, values, dtype,
                 f"{case.name} seed {seed}")


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("norm_target", [False, True])
def test_special_values_in_kept_patches(backend_device, norm_target):
    """Masked MSE: NaN and infinities in patches that count (those masked out are not read)."""
    backend, device = backend_device
    mask = torch.ones(3, 4, dtype=torch.float64, device=device)
    for seed in range(3):
        x, t = _with_specials(_rows(2, torch.float64, seed, shape=(3, 4, 5), device=device), seed)
        _compare(lambda a: fastloss.masked_mse_loss(a, t, mask, norm_target=norm_target, backend=backend),
                 lambda a: mae_patch_loss(a, t, mask, norm_pix_loss=norm_target), [x], torch.float64,
                 f"masked_mse norm_target={norm_target} seed {seed}")


def _rows(n_tensors, dtype, seed=0, shape=(6, 5), device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, dtype=torch.float64, generator=gen).to(device, dtype) for _ in range(n_tensors)]


SCALAR_CASES = []
for beta in (INF, 1e300, 1e-300):
    SCALAR_CASES.append((f"smooth_l1 beta={beta}",
                         lambda be, beta=beta: lambda x, t: fastloss.smooth_l1_loss(x, t, beta=beta, reduction="none",
                                                                                     backend=be),
                         lambda beta=beta: lambda x, t: F.smooth_l1_loss(x, t, beta=beta, reduction="none"), 2))
for delta in (INF, 1e300, 1e-300):
    SCALAR_CASES.append((f"huber delta={delta}",
                         lambda be, delta=delta: lambda x, t: fastloss.huber_loss(x, t, delta=delta, reduction="none",
                                                                                  backend=be),
                         lambda delta=delta: lambda x, t: F.huber_loss(x, t, delta=delta, reduction="none"), 2))
for margin in (INF, NAN, 1e300):
    for p in (2.0, 1.0, 0.5, 1.5, 3.0):
        SCALAR_CASES.append((f"triplet margin={margin} p={p}",
                             lambda be, margin=margin, p=p: lambda a, q, n: fastloss.triplet_margin_loss(
                                 a, q, n, margin=margin, p=p, swap=True, reduction="none", backend=be),
                             lambda margin=margin, p=p: lambda a, q, n: F.triplet_margin_loss(
                                 a, q, n, margin=margin, p=p, swap=True, reduction="none"), 3))
for eps in (NAN, INF, -INF, 0.0, 1e300):
    SCALAR_CASES.append((f"triplet eps={eps}",
                         lambda be, eps=eps: lambda a, q, n: fastloss.triplet_margin_loss(
                             a, q, n, eps=eps, reduction="none", backend=be),
                         lambda eps=eps: lambda a, q, n: F.triplet_margin_loss(a, q, n, eps=eps, reduction="none"), 3))
for p in (NAN, INF, 0.0, -1.0):
    SCALAR_CASES.append((f"triplet p={p}",
                         lambda be, p=p: lambda a, q, n: fastloss.triplet_margin_loss(a, q, n, p=p, reduction="none",
                                                                                      backend=be),
                         lambda p=p: lambda a, q, n: F.triplet_margin_loss(a, q, n, p=p, reduction="none"), 3))
for margin in (NAN, INF, -INF, 1e300):
    SCALAR_CASES.append((f"cosine_embedding margin={margin}",
                         lambda be, margin=margin: lambda a, b: fastloss.cosine_embedding_loss(
                             a, b, torch.tensor([1.0, -1, -1, 1, -1, 0], dtype=a.dtype, device=a.device), margin=margin, reduction="none",
                             backend=be),
                         lambda margin=margin: lambda a, b: F.cosine_embedding_loss(
                             a, b, torch.tensor([1.0, -1, -1, 1, -1, 0], dtype=a.dtype, device=a.device), margin=margin,
                             reduction="none"), 2))
    for distance in ("euclidean", "manhattan", "cosine"):
        SCALAR_CASES.append((f"contrastive {distance} margin={margin}",
                             lambda be, margin=margin, distance=distance: lambda a, b: fastloss.contrastive_loss(
                                 a, b, torch.tensor([1.0, 0, 0, 1, 0.5, 0], dtype=a.dtype, device=a.device), margin, distance, "none",
                                 backend=be),
                             lambda margin=margin, distance=distance: lambda a, b: contrastive_oracle(
                                 a, b, torch.tensor([1.0, 0, 0, 1, 0.5, 0], dtype=a.dtype, device=a.device), margin, distance, "none"),
                             2))
for eps in (NAN, INF, 1e300):
    for distance in ("euclidean", "manhattan"):
        SCALAR_CASES.append((f"contrastive {distance} eps={eps}",
                             lambda be, eps=eps, distance=distance: lambda a, b: fastloss.contrastive_loss(
                                 a, b, torch.tensor([1.0, 0, 0, 1, 0.5, 0], dtype=a.dtype, device=a.device), 1.0, distance, "none",
                                 eps=eps, backend=be),
                             lambda eps=eps, distance=distance: lambda a, b: contrastive_oracle(
                                 a, b, torch.tensor([1.0, 0, 0, 1, 0.5, 0], dtype=a.dtype, device=a.device), 1.0, distance, "none",
                                 eps), 2))
for eps in (NAN, INF, 0.0, 1e300):
    SCALAR_CASES.append((f"masked_mse eps={eps}",
                         lambda be, eps=eps: lambda x: fastloss.masked_mse_loss(
                             x.reshape(2, 3, 5), torch.ones(2, 3, 5, dtype=x.dtype, device=x.device).cumsum(-1),
                             torch.ones(2, 3, dtype=x.dtype, device=x.device), norm_target=True, eps=eps, backend=be),
                         lambda eps=eps: lambda x: mae_patch_loss(
                             x.reshape(2, 3, 5), torch.ones(2, 3, 5, dtype=x.dtype, device=x.device).cumsum(-1),
                             torch.ones(2, 3, dtype=x.dtype, device=x.device), norm_pix_loss=True, eps=eps), 1))


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", SCALAR_CASES, ids=lambda c: c[0])
def test_special_scalar_arguments(backend_device, dtype, case):
    backend, device = backend_device
    name, make_fast, make_oracle, n = case
    values = _rows(n, dtype, shape=(6, 5), device=device)
    if n == 1:
        values = [values[0].reshape(-1)[:30].reshape(6, 5)]
    # An infinite margin gives the cosine distance's soft-label row an infinite coefficient, which
    # the fused formula applies after the row's sums and torch before them: inf - inf is NaN in
    # one where it is inf in the other.
    infinite_coefficient = "contrastive cosine" in name and ("inf" in name or "e+300" in name)
    _compare(make_fast(backend), make_oracle(), values, dtype, name, exact_specials=not infinite_coefficient)


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("grad_output", [NAN, INF, -INF, 0.0], ids=str)
@pytest.mark.parametrize("case", [c for c in pointwise_cases("mean") + pointwise_cases("none") + masked_cases()
                                  if c.name in ("mse", "l1", "huber-weighted", "bce-pos_weight", "masked_mse-input")],
                         ids=ids)
def test_special_grad_output_pointwise(backend_device, grad_output, case):
    """loss.backward(nan) gives NaN gradients, as torch: the kernels' skip of the rescale when
    grad_output is 1 must not take NaN for 1. A pointwise gradient is one product with
    grad_output, as torch's."""
    backend, device = backend_device
    values = [v.detach() for v in inputs(case, device=device)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shape = case.oracle(*values).shape
    _compare(lambda *a: case.fast(*a, backend=backend), case.oracle, values, torch.float64, case.name,
             grad_output=torch.full(shape, grad_output, dtype=torch.float64, device=device))


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("grad_output", [NAN, INF], ids=str)
@pytest.mark.parametrize("case", row_cases("mean"), ids=ids)
def test_special_grad_output_rows(backend_device, grad_output, case):
    """The row losses' fused gradients are those at grad_output = 1, times grad_output: with a
    non-finite grad_output they are non-finite in every row (NaN or infinite wherever torch's
    are), where torch's margin clamps leave 0 in the rows they cut (README, NaN section)."""
    backend, device = backend_device
    values = [v.detach().clone().requires_grad_() for v in inputs(case, device=device)]
    go = torch.tensor(grad_output, dtype=torch.float64, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torch.autograd.grad(case.oracle(*values), values, go)
        ours = torch.autograd.grad(case.fast(*values, backend=backend), values, go)
    for k, (a, e) in enumerate(zip(ours, theirs)):
        assert not bool(a[~e.isfinite()].isfinite().any()), f"{case.name} gradient {k}: finite where torch's is not"
        assert not bool(a.isfinite().any()) or backend == "torch", f"{case.name} gradient {k}: finite entries"


@pytest.mark.parametrize("backend_device", backend_params())
def test_nan_beta_and_delta_checks_as_torch(backend_device):
    backend, device = backend_device
    x, t = _rows(2, torch.float32, device=device)
    for delta in (NAN, 0.0, -INF):
        with pytest.raises(RuntimeError, match="huber_loss does not support non-positive values for delta"):
            fastloss.huber_loss(x, t, delta=delta, backend=backend)
    for beta in (NAN, -INF):
        with pytest.raises(RuntimeError, match="smooth_l1_loss does not support negative values for beta"):
            fastloss.smooth_l1_loss(x, t, beta=beta, backend=backend)
