"""fastloss.mse_loss against a float64 reference: values and gradients, every backend runnable
here, every dtype, reduction and awkward shape."""

import warnings

import pytest
import torch
import torch.nn.functional as F

import fastloss
from conftest import backend_params
from helpers import DTYPES, assert_close_to_reference, poison_allocator, random

REDUCTIONS = ["mean", "sum", "none"]
# 0, 1, primes, one element past a Triton block (4096) and past a CPU chunk (16384).
SHAPES = [(0,), (1,), (7,), (4097,), (16411,), (3, 5, 7), ()]


def reference(input, target, reduction, weight=None):
    """F.mse_loss on float64 CPU copies, with autograd."""
    x = input.detach().cpu().double().requires_grad_()
    t = target.detach().cpu().double().requires_grad_()
    w = None if weight is None else weight.detach().cpu().double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = F.mse_loss(x, t, reduction=reduction, weight=w)
    return loss, x, t


def check(backend, device, dtype, input_shape, target_shape, reduction, weight_shape=None, grad_scale=None):
    x = random(input_shape, dtype, device, requires_grad=True)
    t = random(target_shape, dtype, device, requires_grad=True)
    w = None if weight_shape is None else random(weight_shape, dtype, device).abs() + 0.1
    poison_allocator(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = fastloss.mse_loss(x, t, reduction=reduction, weight=w, backend=backend)
    ref, rx, rt = reference(x, t, reduction, w)
    assert_close_to_reference(loss.detach().cpu(), ref.detach(), dtype, "loss")
    if loss.numel() == 0:
        return
    # grad_output != 1: the loss is not the last layer (non-uniform for "none").
    g = torch.rand(ref.shape, dtype=torch.float64) + 0.5 if grad_scale is None else torch.full(ref.shape, grad_scale, dtype=torch.float64)
    loss.backward(g.to(dtype).to(device))
    ref.backward(g.to(dtype).double())
    assert_close_to_reference(x.grad.cpu(), rx.grad, dtype, "grad input")
    assert_close_to_reference(t.grad.cpu(), rt.grad, dtype, "grad target")


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(backend_device, dtype, reduction, shape):
    backend, device = backend_device
    check(backend, device, dtype, shape, shape, reduction)


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_last_layer_grad_output_one(backend_device, reduction):
    backend, device = backend_device
    check(backend, device, torch.float32, (1031,), (1031,), reduction, grad_scale=1.0)


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_weighted(backend_device, dtype, reduction):
    backend, device = backend_device
    check(backend, device, dtype, (5, 211), (5, 211), reduction, weight_shape=(5, 211))


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shapes", [((4, 1, 3), (5, 3)), ((7,), ()), ((), (6,)), ((2, 1), (1, 3))], ids=str)
def test_broadcast(backend_device, reduction, shapes):
    backend, device = backend_device
    check(backend, device, torch.float32, shapes[0], shapes[1], reduction)


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_weighted_with_broadcast_target(backend_device, reduction):
    # torch divides the weighted mean by the sum of weight as given (not broadcast).
    backend, device = backend_device
    check(backend, device, torch.float32, (1, 6), (4, 6), reduction, weight_shape=(1, 6))


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_non_contiguous(backend_device, dtype):
    backend, device = backend_device
    base_x = random((64, 90), dtype, device)
    base_t = random((90, 64), dtype, device)
    x_leaf = base_x[:, ::3].detach().clone().requires_grad_()  # (64, 30)
    x_view = x_leaf.t()  # non-contiguous, shape (30, 64)
    t = base_t[::3, :]
    assert not x_view.is_contiguous()
    loss = fastloss.mse_loss(x_view, t, reduction="sum", backend=backend)
    ref, rx, _ = reference(x_view, t, "sum")
    assert_close_to_reference(loss.detach().cpu(), ref.detach(), dtype, "loss")
    loss.backward()
    ref.backward()
    assert_close_to_reference(x_leaf.grad.t().cpu(), rx.grad, dtype, "grad input")


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nan_propagates(backend_device, reduction):
    backend, device = backend_device
    x = random((9,), torch.float32, device, requires_grad=True)
    t = random((9,), torch.float32, device)
    with torch.no_grad():
        x[4] = float("nan")
    loss = fastloss.mse_loss(x, t, reduction=reduction, backend=backend)
    ref = F.mse_loss(x.detach().cpu(), t.cpu(), reduction=reduction)
    torch.testing.assert_close(loss.detach().cpu(), ref, equal_nan=True)
    loss.sum().backward()
    assert torch.isnan(x.grad[4]) and torch.isfinite(x.grad[:4]).all()


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
def test_misaligned_storage(backend_device, dtype, offset):
    # Views that start off a 16-byte boundary take the kernels' scalar (unvectorized) path.
    backend, device = backend_device
    n = 5003
    x_base = random((n + offset,), dtype, device)
    t_base = random((n + 1,), dtype, device)
    x_leaf = x_base.detach().requires_grad_()
    x, t = x_leaf[offset:], t_base[1:]
    poison_allocator(device)
    loss = fastloss.mse_loss(x, t, reduction="sum", backend=backend)
    ref, rx, _ = reference(x, t, "sum")
    assert_close_to_reference(loss.detach().cpu(), ref.detach(), dtype, "loss")
    loss.backward()
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
