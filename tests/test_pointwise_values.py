"""The pointwise losses (MSE, L1, smooth L1, Huber, BCE with logits) against torch's own
functions in float64: values and gradients of input and target, every backend runnable here,
every dtype, reduction and awkward shape."""

import warnings

import pytest
import torch
import torch.nn.functional as F

import fastloss
from conftest import backend_params
from fastloss import _backend
from helpers import DTYPES, assert_close_to_reference, poisoned_outputs, random

REDUCTIONS = ["mean", "sum", "none"]

# name -> (fastloss function, torch function, keyword arguments, takes weight, target broadcasts)
LOSSES = {
    "mse": (fastloss.mse_loss, F.mse_loss, {}, True, True),
    "l1": (fastloss.l1_loss, F.l1_loss, {}, True, True),
    "smooth_l1": (fastloss.smooth_l1_loss, F.smooth_l1_loss, {"beta": 0.7}, False, True),
    "smooth_l1_beta0": (fastloss.smooth_l1_loss, F.smooth_l1_loss, {"beta": 0.0}, False, True),
    "huber": (fastloss.huber_loss, F.huber_loss, {"delta": 1.3}, True, True),
    "bce": (fastloss.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, {}, True, False),
}
WEIGHTED = [k for k, v in LOSSES.items() if v[3]]
BROADCASTING = [k for k, v in LOSSES.items() if v[4]]
# 0, 1, primes, one element past a Triton block (4096) and past a CPU chunk (16384).
SHAPES = [(0,), (1,), (7,), (4097,), (16411,), (3, 5, 7), ()]


def reference(input, target, reduction, weight=None, loss="mse", **extra):
    """torch's own loss on float64 CPU copies, with autograd."""
    x = input.detach().cpu().double().requires_grad_()
    t = target.detach().cpu().double().requires_grad_()
    w = None if weight is None else weight.detach().cpu().double()
    extra = {k: (v.detach().cpu().double() if isinstance(v, torch.Tensor) else v) for k, v in extra.items()}
    torch_fn, kwargs = LOSSES[loss][1], {**LOSSES[loss][2], **extra}
    if w is not None:
        kwargs["weight"] = w
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = torch_fn(x, t, reduction=reduction, **kwargs)
    return out, x, t


def call(loss, input, target, reduction, backend, weight=None, **extra):
    fn, kwargs = LOSSES[loss][0], {**LOSSES[loss][2], **extra}
    if weight is not None:
        kwargs["weight"] = weight
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(input, target, reduction=reduction, backend=backend, **kwargs)


def make_target(loss, shape, dtype, device):
    if loss == "bce":  # probabilities, with some outside [0, 1] as torch allows
        return (torch.rand(shape, dtype=torch.float64) * 1.4 - 0.2).to(dtype).to(device).requires_grad_()
    return random(shape, dtype, device, requires_grad=True)


def check(backend, device, dtype, input_shape, target_shape, reduction, weight_shape=None,
          grad_scale=None, loss="mse", input_scale=1.0, **extra):
    x = random(input_shape, dtype, device, requires_grad=True, scale=input_scale)
    t = make_target(loss, target_shape, dtype, device)
    w = None if weight_shape is None else random(weight_shape, dtype, device).abs() + 0.1
    with poisoned_outputs(device):
        out = call(loss, x, t, reduction, backend, w, **extra)
    ref, rx, rt = reference(x, t, reduction, w, loss, **extra)
    assert_close_to_reference(out.detach().cpu(), ref.detach(), dtype, "loss")
    if out.numel() == 0:
        return
    # grad_output != 1: the loss is not the last layer (non-uniform for "none").
    g = torch.rand(ref.shape, dtype=torch.float64) + 0.5 if grad_scale is None else torch.full(ref.shape, grad_scale, dtype=torch.float64)
    out.backward(g.to(dtype).to(device))
    ref.backward(g.to(dtype).double())
    assert_close_to_reference(x.grad.cpu(), rx.grad, dtype, "grad input")
    assert_close_to_reference(t.grad.cpu(), rt.grad, dtype, "grad target")


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("loss", list(LOSSES))
def test_matches_reference(backend_device, dtype, reduction, shape, loss):
    backend, device = backend_device
    check(backend, device, dtype, shape, shape, reduction, loss=loss)


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss", list(LOSSES))
def test_last_layer_grad_output_one(backend_device, reduction, loss):
    backend, device = backend_device
    check(backend, device, torch.float32, (1031,), (1031,), reduction, grad_scale=1.0, loss=loss)


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss", WEIGHTED)
def test_weighted(backend_device, dtype, reduction, loss):
    backend, device = backend_device
    check(backend, device, dtype, (5, 211), (5, 211), reduction, weight_shape=(5, 211), loss=loss)


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shapes", [((4, 1, 3), (5, 3)), ((7,), ()), ((), (6,)), ((2, 1), (1, 3))], ids=str)
@pytest.mark.parametrize("loss", BROADCASTING)
def test_broadcast(backend_device, reduction, shapes, loss):
    backend, device = backend_device
    check(backend, device, torch.float32, shapes[0], shapes[1], reduction, loss=loss)


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss", ["mse", "l1", "huber"])
def test_weighted_with_broadcast_target(backend_device, reduction, loss):
    # torch divides the MSE/L1 weighted mean by the sum of weight as given (not broadcast).
    backend, device = backend_device
    check(backend, device, torch.float32, (1, 6), (4, 6), reduction, weight_shape=(1, 6), loss=loss)


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("loss", list(LOSSES))
def test_non_contiguous(backend_device, dtype, loss):
    backend, device = backend_device
    base_x = random((64, 90), dtype, device)
    base_t = random((90, 64), dtype, device)
    x_leaf = base_x[:, ::3].detach().clone().requires_grad_()  # (64, 30)
    x_view = x_leaf.t()  # non-contiguous, shape (30, 64)
    t = base_t[::3, :]
    if loss == "bce":
        t = t.sigmoid()
    assert not x_view.is_contiguous()
    out = call(loss, x_view, t, "sum", backend)
    ref, rx, _ = reference(x_view, t, "sum", loss=loss)
    assert_close_to_reference(out.detach().cpu(), ref.detach(), dtype, "loss")
    out.backward()
    ref.backward()
    assert_close_to_reference(x_leaf.grad.t().cpu(), rx.grad, dtype, "grad input")


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss", list(LOSSES))
def test_nan_propagates_as_in_torch(backend_device, reduction, loss):
    # values and gradients: NaN where torch gives NaN (and 0 where torch gives 0, as L1's
    # gradient at NaN, since torch.sign(nan) is 0)
    backend, device = backend_device
    x = random((9,), torch.float32, device, requires_grad=True)
    t = make_target(loss, (9,), torch.float32, device)
    with torch.no_grad():
        x[4] = float("nan")
        t[6] = float("nan")
    out = call(loss, x, t, reduction, backend)
    ref, rx, rt = reference(x, t, reduction, loss=loss)
    torch.testing.assert_close(out.detach().cpu().double(), ref.detach(), equal_nan=True, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(x.grad.cpu().double(), rx.grad, equal_nan=True, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(t.grad.cpu().double(), rt.grad, equal_nan=True, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend_device", backend_params())
def test_mixed_dtypes_promote_as_torch(backend_device):
    backend, device = backend_device
    x = random((33,), torch.float16, device, requires_grad=True)
    t = random((33,), torch.float32, device)
    loss = fastloss.mse_loss(x, t, backend=backend)
    assert loss.dtype == torch.float32
    loss.backward()
    assert x.grad.dtype == torch.float16
    ref, rx, _ = reference(x, t, "mean")
    ref.backward()
    assert_close_to_reference(loss.detach().cpu(), ref.detach(), torch.float32, "loss")
    assert_close_to_reference(x.grad.cpu(), rx.grad, torch.float16, "grad input")
    # an integer target is promoted to the float input's dtype, as torch does
    ti = torch.randint(-3, 4, (33,), device=device)
    assert fastloss.mse_loss(x.detach(), ti, backend=backend).dtype == F.mse_loss(x.detach().cpu(), ti.cpu()).dtype


@pytest.mark.parametrize("backend_device", backend_params())
def test_weight_requiring_grad_gets_its_gradient(backend_device):
    backend, device = backend_device
    x = random((50,), torch.float64, device, requires_grad=True)
    t = random((50,), torch.float64, device)
    w = (random((50,), torch.float64, device).abs() + 0.1).requires_grad_()
    fastloss.mse_loss(x, t, weight=w, backend=backend).backward()
    w_ref = w.detach().cpu().clone().requires_grad_()
    F.mse_loss(x.detach().cpu(), t.cpu(), weight=w_ref).backward()
    torch.testing.assert_close(w.grad.cpu(), w_ref.grad)


def test_deprecated_arguments_match_torch():
    x = random((4, 6), torch.float32, "cpu")
    t = random((4, 6), torch.float32, "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for size_average in (None, True, False):
            for reduce in (None, True, False):
                ours = fastloss.mse_loss(x, t, size_average=size_average, reduce=reduce, reduction="sum")
                theirs = F.mse_loss(x, t, size_average=size_average, reduce=reduce, reduction="sum")
                torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_size_mismatch_warns_like_torch():
    with pytest.warns(UserWarning, match="different to the input size"):
        fastloss.mse_loss(torch.randn(3, 4), torch.randn(4))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_module_matches_torch_module(reduction):
    x = random((8, 13), torch.float32, "cpu", requires_grad=True)
    t = random((8, 13), torch.float32, "cpu")
    ours = fastloss.MSELoss(reduction=reduction)
    theirs = torch.nn.MSELoss(reduction=reduction)
    assert isinstance(ours, torch.nn.MSELoss) and ours.reduction == theirs.reduction
    torch.testing.assert_close(ours(x, t), theirs(x, t), rtol=1e-6, atol=1e-6)
    legacy = fastloss.MSELoss(size_average=False)
    assert legacy.reduction == "sum" and legacy.backend == "auto"


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("offset", [1, 3])
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_misaligned_storage(backend_device, dtype, offset, loss):
    # Views that start off a 16-byte boundary take the kernels' scalar (unvectorized) path.
    backend, device = backend_device
    n = 5003
    x_base = random((n + offset,), dtype, device)
    t_base = random((n + 1,), dtype, device)
    x_leaf = x_base.detach().requires_grad_()
    x, t = x_leaf[offset:], t_base[1:]
    with poisoned_outputs(device):
        out = call(loss, x, t, "sum", backend)
    ref, rx, _ = reference(x, t, "sum", loss=loss)
    assert_close_to_reference(out.detach().cpu(), ref.detach(), dtype, "loss")
    out.backward()
    ref.backward()
    assert_close_to_reference(x_leaf.grad[offset:].cpu(), rx.grad, dtype, "grad input")
    assert (x_leaf.grad[:offset] == 0).all()


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_more_than_2_to_the_31_elements(backend):
    """int64 indexing: float32 tensors past 2^31 elements (input, target, gradient: 26 GB)."""
    n = (1 << 31) + 4099
    need = 3 * n * 4 + (6 << 30)
    free, _ = torch.cuda.mem_get_info()
    if free < need:
        pytest.skip(f"needs about {need >> 30} GiB of free GPU memory, {free >> 30} GiB free")
    x = torch.randn(n, device="cuda").requires_grad_()
    t = torch.randn(n, device="cuda")
    total = 0.0
    for start in range(0, n, 1 << 28):
        d = x.detach()[start:start + (1 << 28)].double() - t[start:start + (1 << 28)].double()
        total += float((d * d).sum())
    loss = fastloss.mse_loss(x, t, backend=backend)
    assert abs(float(loss) - total / n) <= 1e-5 * total / n
    loss.backward()
    tail = slice(n - 5000, n)  # elements past 2^31
    expected = 2.0 * (x.detach()[tail].double() - t[tail].double()) / n
    torch.testing.assert_close(x.grad[tail].double(), expected, rtol=1e-5, atol=1e-15)
    del x, t, loss
    torch.cuda.empty_cache()


# --- edge values of each loss --------------------------------------------------------------

@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("beta", [0.0, 1e-4, 0.5, 1.0, 1e4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_smooth_l1_beta(backend_device, beta, dtype):
    backend, device = backend_device
    check(backend, device, dtype, (1000,), (1000,), "mean", loss="smooth_l1", beta=beta)


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("delta", [1e-4, 0.3, 1.0, 1e4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_huber_delta(backend_device, delta, dtype):
    backend, device = backend_device
    check(backend, device, dtype, (1000,), (1000,), "sum", loss="huber", delta=delta)


@pytest.mark.parametrize("backend_device", backend_params())
def test_beta_and_delta_given_as_integers_or_in_float64_precision(backend_device):
    backend, device = backend_device
    check(backend, device, torch.float64, (300,), (300,), "sum", loss="smooth_l1", beta=0.1)
    check(backend, device, torch.float64, (300,), (300,), "sum", loss="huber", delta=2)


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("scale", [1.0, 30.0, 100.0, 1e4])
def test_bce_extreme_logits(backend_device, dtype, scale):
    # logits of +-100 and +-1e4: finite values and gradients wherever torch's are
    backend, device = backend_device
    check(backend, device, dtype, (777,), (777,), "mean", loss="bce", input_scale=scale)


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("pos_weight", [None, 0.5, 1.0, 2.5])
def test_bce_infinite_operands_as_torch(backend_device, dtype, pos_weight):
    # torch has two formulas: without pos_weight its gradients are sigmoid(x) - t and -x (so an
    # infinite target gives an infinite loss, not NaN); with it, its target gradient is
    # log_sigmoid(-x) - pos_weight log_sigmoid(x) (infinite, not NaN, at x = -inf)
    backend, device = backend_device
    inf, nan = float("inf"), float("nan")
    logits = [inf, -inf, 0.0, 3.0, -3.0, 1e4, -1e4, nan]
    targets = [0.0, 1.0, 0.5, inf, -inf, 2.0, -0.5, nan]
    x = torch.tensor([a for a in logits for _ in targets], dtype=dtype, device=device, requires_grad=True)
    t = torch.tensor([b for _ in logits for b in targets], dtype=dtype, device=device, requires_grad=True)
    extra = {} if pos_weight is None else {"pos_weight": torch.tensor(pos_weight, dtype=dtype, device=device)}
    out = call("bce", x, t, "none", backend, **extra)
    ref, rx, rt = reference(x, t, "none", loss="bce", **extra)
    out.sum().backward()
    ref.sum().backward()
    for what, actual, expected in (("loss", out, ref), ("grad input", x.grad, rx.grad), ("grad target", t.grad, rt.grad)):
        torch.testing.assert_close(actual.detach().cpu().double(), expected.detach(), equal_nan=True,
                                   rtol=1e-6, atol=0, msg=lambda m: f"{what}: {m}")


def _float32_ulps(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """|actual - expected| in units of float32's spacing at expected (float64)."""
    magnitude = expected.abs().float()
    spacing = (torch.nextafter(magnitude, torch.tensor(float("inf"))) - magnitude).double()
    return (actual.double() - expected).abs() / spacing


# The C++ CPU kernel's own exp and log1p polynomials measure 2.5 ulp (softplus) and 2.4 ulp
# (sigmoid) on this sweep; the interpreted Triton kernel, on numpy's exp and log, 4.1 and 3.1.
ULP_BOUNDS = [pytest.param("cpu", 3, id="cpu")]
if _backend.triton_interpreting():
    ULP_BOUNDS.append(pytest.param("triton", 6, id="triton-interpreted"))


@pytest.mark.parametrize("backend,bound", ULP_BOUNDS)
def test_bce_float32_accuracy_in_ulps(backend, bound):
    # A dense sweep of logits, subnormal results included: softplus(-x) (the loss at t = 1) and
    # sigmoid(x) (the gradient at t = 0) against float64. (Elsewhere (1 - t) x + softplus(-x)
    # cancels, in torch's formula too; the GPU paths use the GPU's math library and are held to
    # the per-dtype tolerances of the other tests.)
    x = torch.cat([torch.linspace(-104, 104, 416_001, dtype=torch.float64),
                   torch.logspace(-30, 0, 3_001, dtype=torch.float64)]).float()
    x = torch.cat([x, -x]).requires_grad_()
    expected_loss = F.softplus(-x.detach().double())
    expected_grad = torch.sigmoid(x.detach().double())
    loss = call("bce", x, torch.ones_like(x), "none", backend)
    worst = _float32_ulps(loss.detach(), expected_loss).max().item()
    assert worst <= bound, f"softplus(-x): {worst:.2f} ulp"
    call("bce", x, torch.zeros_like(x), "sum", backend).backward()
    worst = _float32_ulps(x.grad, expected_grad).max().item()
    assert worst <= bound, f"sigmoid(x): {worst:.2f} ulp"


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("shapes", [((6, 5), (5,), (5,)), ((6, 5), (6, 1), (1, 5)), ((2, 3, 4), (3, 4), ()),
                                    ((2, 3, 4), (4,), (2, 3, 4)), ((8,), (8,), (1,))], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_weight_and_pos_weight_broadcast(backend_device, shapes, reduction):
    backend, device = backend_device
    input_shape, weight_shape, pos_shape = shapes
    pos_weight = random(pos_shape, torch.float32, device).abs() + 0.2
    check(backend, device, torch.float32, input_shape, input_shape, reduction, weight_shape=weight_shape,
          loss="bce", pos_weight=pos_weight)


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("which", ["weight", "pos_weight"])
def test_bce_weights_requiring_grad_fail_as_in_torch(backend_device, which):
    # torch's BCE is not differentiable in weight or pos_weight; neither is fastloss's
    backend, device = backend_device
    x = random((4, 3), torch.float64, device, requires_grad=True)
    t = torch.rand(4, 3, dtype=torch.float64, device=device)
    extra = {which: (torch.rand(3, dtype=torch.float64, device=device) + 0.5).requires_grad_()}
    with pytest.raises(RuntimeError, match=f"not differentiable with respect to argument '{which}'"):
        F.binary_cross_entropy_with_logits(x.detach().cpu(), t.cpu(), **{k: v.detach().cpu().requires_grad_() for k, v in extra.items()})
    with pytest.raises(RuntimeError, match=f"not differentiable with respect to argument '{which}'"):
        fastloss.binary_cross_entropy_with_logits(x, t, backend=backend, **extra)


def test_bce_target_of_other_size_is_an_error():
    with pytest.raises(ValueError, match=r"target must have input's size \(2, 3\), got \(3,\)"):
        fastloss.binary_cross_entropy_with_logits(torch.randn(2, 3), torch.rand(3))


def test_invalid_beta_and_delta_as_torch():
    x, t = torch.randn(4), torch.randn(4)
    with pytest.raises(RuntimeError, match="beta must be >= 0"):
        fastloss.smooth_l1_loss(x, t, beta=-1.0)
    for delta in (0.0, -2.0):
        with pytest.raises(RuntimeError, match="delta must be > 0"):
            fastloss.huber_loss(x, t, delta=delta)


@pytest.mark.parametrize("name", ["L1Loss", "SmoothL1Loss", "HuberLoss", "BCEWithLogitsLoss", "MSELoss"])
def test_modules_subclass_torch_and_match(name):
    ours_cls, theirs_cls = getattr(fastloss, name), getattr(torch.nn, name)
    kwargs = {"BCEWithLogitsLoss": {"pos_weight": torch.rand(13) + 0.5, "weight": torch.rand(13)},
              "SmoothL1Loss": {"beta": 0.3}, "HuberLoss": {"delta": 0.6}}.get(name, {})
    ours, theirs = ours_cls(reduction="sum", **kwargs), theirs_cls(reduction="sum", **kwargs)
    assert isinstance(ours, theirs_cls)
    x = random((8, 13), torch.float32, "cpu")
    t = torch.rand(8, 13) if name == "BCEWithLogitsLoss" else random((8, 13), torch.float32, "cpu")
    torch.testing.assert_close(ours(x, t), theirs(x, t), rtol=1e-5, atol=1e-5)
    if name == "BCEWithLogitsLoss":
        assert "pos_weight" in dict(ours.named_buffers())
