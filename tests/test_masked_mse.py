"""fastloss.masked_mse_loss (the masked autoencoder's patch loss) against MAE's forward_loss
(tests/loss_cases.py) in float64, on every backend runnable here."""

import pytest
import torch
from torch.library import opcheck

import fastloss
from conftest import backend_params
from loss_cases import mae_patch_loss
from helpers import assert_compiled_matches_eager, DTYPES, assert_close_to_reference, poisoned_outputs, random

KERNEL_BACKENDS = [p for p in backend_params() if p.values[0][0] != "torch"]
FORWARD_OPS = {"cpu": "masked_mse_loss", "cuda": "masked_mse_loss", "triton": "masked_mse_loss_triton"}
# (N, L, P): P = 1, a prime, a ViT patch (16*16*3), one past a Triton block, larger than a CPU chunk
SHAPES = [(2, 5, 1), (3, 7, 13), (2, 9, 768), (1, 3, 4097), (1, 2, 20011), (4, 0, 8), (0, 3, 5)]


def make_mask(kind, shape, device):
    if kind == "bool":
        m = torch.rand(shape) < 0.6
    elif kind == "float":
        m = torch.rand(shape, dtype=torch.float64) * (torch.rand(shape) < 0.7)
    elif kind == "zeros":
        m = torch.zeros(shape)
    else:
        m = torch.ones(shape, dtype=torch.int64)
    return m.to(device)


def check(backend, device, dtype, shape, mask_kind, norm_target, grad_scale=1.7):
    x = random(shape, dtype, device, requires_grad=True)
    t = random(shape, dtype, device, scale=2.0) + 0.5
    mask = make_mask(mask_kind, shape[:2], device)
    with poisoned_outputs(device):
        loss = fastloss.masked_mse_loss(x, t, mask, norm_target=norm_target, backend=backend)
    rx = x.detach().cpu().double().requires_grad_()
    ref = mae_patch_loss(rx, t.detach().cpu().double(), mask.cpu(), norm_target, 1e-6)
    assert_close_to_reference(loss.detach().cpu(), ref.detach(), dtype, "loss")
    if x.numel() == 0 or not torch.isfinite(ref):
        return
    loss.backward(torch.tensor(grad_scale, dtype=dtype, device=device))
    ref.backward(torch.tensor(grad_scale, dtype=torch.float64).to(dtype).double())
    assert_close_to_reference(x.grad.cpu(), rx.grad, dtype, "grad input")


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("norm_target", [False, True])
def test_matches_formula(backend_device, dtype, shape, norm_target):
    backend, device = backend_device
    check(backend, device, dtype, shape, "bool", norm_target)


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("mask_kind", ["bool", "float", "zeros", "ones"])
@pytest.mark.parametrize("norm_target", [False, True])
def test_mask_kinds(backend_device, mask_kind, norm_target):
    # an all-zero mask gives 0/0 = NaN, as the formula does
    backend, device = backend_device
    check(backend, device, torch.float32, (3, 11, 48), mask_kind, norm_target)


@pytest.mark.parametrize("backend_device", backend_params())
def test_norm_target_on_constant_patches(backend_device):
    backend, device = backend_device
    x = random((2, 4, 16), torch.float32, device, requires_grad=True)
    t = torch.full((2, 4, 16), 3.0, device=device)  # variance 0: the target normalises to 0
    mask = torch.ones(2, 4, device=device)
    loss = fastloss.masked_mse_loss(x, t, mask, norm_target=True, backend=backend)
    ref = mae_patch_loss(x.detach().cpu().double(), t.cpu().double(), mask.cpu(), True, 1e-6)
    torch.testing.assert_close(loss.detach().cpu().double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("eps", [1e-6, 3e-7])
def test_norm_target_eps_is_exact_in_float64(backend_device, eps):
    """Patches whose variance is of the order of eps: a float64 loss must see eps to float64
    precision (rounded to float32 on its way into a kernel it moves the loss by about 1e-8)."""
    backend, device = backend_device
    x = random((2, 3, 8), torch.float64, device, requires_grad=True)
    t = (torch.arange(8, dtype=torch.float64, device=device) - 3.5).expand(2, 3, 8) * 1e-3 + 0.25
    mask = torch.ones(2, 3, dtype=torch.float64, device=device)
    loss = fastloss.masked_mse_loss(x, t, mask, norm_target=True, eps=eps, backend=backend)
    normalised = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + eps) ** 0.5
    expected = ((x.detach() - normalised) ** 2).mean(-1).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("backend_device", backend_params())
def test_masked_out_patches_are_not_read(backend_device):
    backend, device = backend_device
    if backend == "torch":
        pytest.skip("the plain formula reads every patch by definition")
    x = random((2, 6, 32), torch.float32, device, requires_grad=True)
    t = random((2, 6, 32), torch.float32, device)
    mask = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 0, 1, 1, 0, 0]], device=device, dtype=torch.bool)
    with torch.no_grad():
        x[~mask] = float("nan")
        t[~mask] = float("inf")
    loss = fastloss.masked_mse_loss(x, t, mask, backend=backend)
    expected = mae_patch_loss(x.detach()[mask].cpu().double(), t[mask].cpu().double(),
                              torch.ones(int(mask.sum())), False, 1e-6)
    torch.testing.assert_close(loss.detach().cpu().double(), expected, rtol=1e-5, atol=0)
    loss.backward()
    assert (x.grad[~mask] == 0).all() and torch.isfinite(x.grad[mask]).all()


@pytest.mark.parametrize("backend_device", backend_params())
def test_target_requiring_grad(backend_device):
    backend, device = backend_device
    x = random((2, 3, 10), torch.float64, device, requires_grad=True)
    t = random((2, 3, 10), torch.float64, device, requires_grad=True)
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64, device=device)
    fastloss.masked_mse_loss(x, t, mask, norm_target=True, backend=backend).backward()
    rx, rt = x.detach().cpu().clone().requires_grad_(), t.detach().cpu().clone().requires_grad_()
    mae_patch_loss(rx, rt, mask.cpu(), True, 1e-6).backward()
    torch.testing.assert_close(x.grad.cpu(), rx.grad)
    torch.testing.assert_close(t.grad.cpu(), rt.grad)


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
@pytest.mark.parametrize("norm_target", [False, True])
def test_gradcheck_float64(backend_device, norm_target):
    backend, device = backend_device
    x = random((2, 5, 7), torch.float64, device, requires_grad=True)
    t = random((2, 5, 7), torch.float64, device)
    mask = torch.rand(2, 5, dtype=torch.float64, device=device) * (torch.rand(2, 5, device=device) < 0.7)
    assert torch.autograd.gradcheck(
        lambda a: fastloss.masked_mse_loss(a, t, mask, norm_target=norm_target, backend=backend), (x,))


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("norm_target", [False, True])
def test_opcheck(backend_device, dtype, grad, norm_target):
    backend, device = backend_device
    op = getattr(torch.ops.fastloss, FORWARD_OPS[backend])
    x, t = random((6, 19), dtype, device), random((6, 19), dtype, device)
    mask = (torch.rand(6, device=device) < 0.5).to(dtype)
    opcheck(op, (x, t, mask, norm_target, 1e-6, grad))


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bitwise_deterministic(backend_device, dtype):
    backend, device = backend_device
    x, t = random((4, 40, 97), dtype, device), random((4, 40, 97), dtype, device)
    mask = torch.rand(4, 40, device=device) < 0.75

    def run():
        xx = x.clone().requires_grad_()
        loss = fastloss.masked_mse_loss(xx, t, mask, norm_target=True, backend=backend)
        loss.backward()
        return loss.detach(), xx.grad

    (l1, g1), (l2, g2) = run(), run()
    assert torch.equal(l1, l2) and torch.equal(g1, g2)


def test_cpu_independent_of_thread_count():
    x, t = random((8, 196, 768), torch.float32, "cpu", requires_grad=True), random((8, 196, 768), torch.float32, "cpu")
    mask = torch.rand(8, 196) < 0.75
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            x.grad = None
            loss = fastloss.masked_mse_loss(x, t, mask, norm_target=True, backend="cpu")
            loss.backward()
            results.append((loss.detach().clone(), x.grad.clone()))
    finally:
        torch.set_num_threads(threads)
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


def test_cpu_streaming_gradient_matches_the_cached_path():
    """A gradient of 32 MiB and more is written with streaming stores: the same bits as the
    ordinary stores of a smaller call with the same sum(mask) (counted patches only in the
    first images, so both calls scale by the same 1 / (P * sum(mask)))."""
    images, patches, p = 60, 196, 768  # 36 MB of float32
    x = random((images, patches, p), torch.float32, "cpu", requires_grad=True)
    t = random((images, patches, p), torch.float32, "cpu")
    mask = torch.zeros(images, patches, dtype=torch.bool)
    mask[:2] = torch.rand(2, patches) < 0.75
    (big,) = torch.autograd.grad(fastloss.masked_mse_loss(x, t, mask, norm_target=True, backend="cpu"), x)
    (small,) = torch.autograd.grad(fastloss.masked_mse_loss(x[:3], t[:3], mask[:3], norm_target=True, backend="cpu"), x)
    assert torch.equal(big[:3], small[:3])
    assert torch.equal(big[3:], torch.zeros_like(big[3:]))
    assert big[:2].abs().sum() > 0


@pytest.mark.parametrize("backend_device", KERNEL_BACKENDS)
def test_torch_compile_fullgraph(backend_device):
    backend, device = backend_device
    criterion = fastloss.MaskedMSELoss(norm_target=True, backend=backend)

    def step(x, t, m):
        return criterion(x * 1.5, t, m) * 3.0

    x = random((2, 9, 24), torch.float32, device, requires_grad=True)
    t, m = random((2, 9, 24), torch.float32, device), torch.rand(2, 9, device=device) < 0.6
    assert_compiled_matches_eager(step, (x, t, m), x, backend, device)


def test_bad_input():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"mask must have input's shape without the last dimension \(2, 3\), got \(3,\)"):
        fastloss.masked_mse_loss(x, x, torch.ones(3))
    with pytest.raises(ValueError, match=r"target must have input's shape \(2, 3, 4\), got \(2, 3, 5\)"):
        fastloss.masked_mse_loss(x, torch.randn(2, 3, 5), torch.ones(2, 3))
    with pytest.raises(TypeError, match="floating-point"):
        fastloss.masked_mse_loss(x.long(), x.long(), torch.ones(2, 3))
    with pytest.raises(ValueError, match="at least 2-d"):
        fastloss.masked_mse_loss(torch.randn(4), torch.randn(4), torch.ones(()))


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("shape", [(6, 10), (2, 3, 4, 9)], ids=str)
def test_any_leading_dimensions(backend_device, shape):
    """(L, P) patches of one image and (N, H, W, P) grids work as (N, L, P) does: the mask has the
    leading dimensions."""
    backend, device = backend_device
    x = random(shape, torch.float64, device, requires_grad=True)
    t = random(shape, torch.float64, device)
    mask = (torch.rand(shape[:-1]) < 0.7).to(device)
    mask.view(-1)[0] = True
    for norm_target in (False, True):
        loss = fastloss.masked_mse_loss(x, t, mask, norm_target=norm_target, backend=backend)
        rx = x.detach().cpu().requires_grad_()
        ref = mae_patch_loss(rx, t.cpu(), mask.cpu(), norm_target, 1e-6)
        assert_close_to_reference(loss.detach().cpu(), ref.detach(), torch.float64, "loss")
        (grad,) = torch.autograd.grad(loss, x)
        ref.backward()
        assert_close_to_reference(grad.cpu(), rx.grad, torch.float64, "grad input")
