"""Everything autograd offers on torch's losses works on fastloss's, with torch's numbers:
second and higher derivatives (create_graph=True), the torch.func transforms (grad, vmap of
grad, jacrev, jacfwd, jvp, hessian) and forward-mode AD, for every loss and every
differentiable argument, on every backend runnable here. The oracle is torch's own function
(or the loss's formula, tests/loss_cases.py), differentiated by torch."""

import dataclasses
import gc
import importlib
import warnings
import weakref

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

from conftest import backend_params
from loss_cases import batch_cases, inputs, masked_cases, pointwise_cases, row_cases
from fastloss.ops import autograd as fused_autograd

BACKENDS = [p for p in backend_params()]
CASES = pointwise_cases("mean") + row_cases("mean") + masked_cases() + batch_cases()
NONE_CASES = pointwise_cases("none") + row_cases("none")


def ids(case):
    return case.name


def close(actual, expected, what):
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-11, equal_nan=True, msg=lambda m: f"{what}: {m}")


@pytest.fixture(autouse=True)
def _quiet_vmap_fallback():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*performance drop.*")
        yield


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("case", CASES + NONE_CASES, ids=ids)
def test_gradgradcheck(backend_device, case):
    backend, device = backend_device
    args = inputs(case, device=device)
    assert torch.autograd.gradgradcheck(lambda *a: case.fast(*a, backend=backend), args)


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_meta_gradient_through_a_tanh_model(backend_device, case):
    """MAML's step: the gradient of |dL/dW|^2 through the model, with L the loss of tanh(x W)
    and the other operands; create_graph=True keeps the loss's own second derivative."""
    backend, device = backend_device
    args = inputs(case, device=device)
    gen = torch.Generator().manual_seed(3)
    features = args[0].shape[-1]
    x = torch.randn(*args[0].shape[:-1], features, dtype=torch.float64, generator=gen).to(device)
    w = (torch.randn(features, features, dtype=torch.float64, generator=gen) / features ** 0.5).to(device).requires_grad_()

    def meta(loss_fn):
        pred = torch.tanh(x @ w)
        if case.make is not None:  # BCE: logits
            pred = pred * 3
        loss = loss_fn(pred, *[a.detach() for a in args[1:]])
        (g,) = torch.autograd.grad(loss, w, create_graph=True)
        (meta_grad,) = torch.autograd.grad((g ** 2).sum(), w)
        return meta_grad

    close(meta(lambda *a: case.fast(*a, backend=backend)), meta(case.oracle), f"{case.name} meta-gradient")


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_func_grad_every_argument(backend_device, case):
    backend, device = backend_device
    args = [a.detach() for a in inputs(case, device=device)]
    for k in range(case.n_tensors):
        got = grad(lambda *a: case.fast(*a, backend=backend), argnums=k)(*args)
        close(got, grad(case.oracle, argnums=k)(*args), f"{case.name} grad of argument {k}")


def assert_transform_matches(case, backend, transform, args, what):
    """transform(loss, argnums=every tensor) of fastloss's loss and of the oracle agree."""
    argnums = tuple(range(case.n_tensors))
    got = transform(lambda *a: case.fast(*a, backend=backend), argnums)(*args)
    expected = transform(case.oracle, argnums)(*args)
    for k, (g, e) in enumerate(zip(got, expected)):
        close(g, e, f"{case.name} {what} of argument {k}")


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("case", CASES + NONE_CASES, ids=ids)
def test_func_vjp(backend_device, case):
    backend, device = backend_device
    args = [a.detach() for a in inputs(case, device=device)]
    value, vjp_fn = vjp(lambda *a: case.fast(*a, backend=backend), *args)
    expected_value, expected_fn = vjp(case.oracle, *args)
    close(value, expected_value, f"{case.name} vjp value")
    cotangent = torch.rand_like(expected_value) + 0.5
    for k, (g, e) in enumerate(zip(vjp_fn(cotangent), expected_fn(cotangent))):
        close(g, e, f"{case.name} vjp of argument {k}")


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_per_sample_gradients(backend_device, case):
    """vmap(grad): one loss and its gradient per sample, as differential-privacy training does."""
    backend, device = backend_device
    batched = [a.detach() for a in inputs(case, shape=(5, *case.shape), device=device)]
    assert_transform_matches(case, backend, lambda f, argnums: vmap(grad(f, argnums=argnums)), batched,
                             "per-sample gradient")
    close(vmap(lambda *a: case.fast(*a, backend=backend))(*batched), vmap(case.oracle)(*batched),
          f"{case.name} per-sample loss")


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("case", CASES + NONE_CASES, ids=ids)
def test_jacrev_and_jacfwd(backend_device, case):
    backend, device = backend_device
    args = [a.detach() for a in inputs(case, device=device)]
    for transform in (jacrev, jacfwd):
        assert_transform_matches(case, backend, lambda f, argnums: transform(f, argnums=argnums), args,
                                 transform.__name__)


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("case", CASES + NONE_CASES, ids=ids)
def test_jvp_and_forward_ad(backend_device, case):
    backend, device = backend_device
    args = [a.detach() for a in inputs(case, device=device)]
    gen = torch.Generator().manual_seed(5)
    tangents = [torch.randn(a.shape, dtype=a.dtype, generator=gen).to(device) for a in args]
    value, tangent = jvp(lambda *a: case.fast(*a, backend=backend), tuple(args), tuple(tangents))
    expected_value, expected_tangent = jvp(case.oracle, tuple(args), tuple(tangents))
    close(value, expected_value, f"{case.name} jvp value")
    close(tangent, expected_tangent, f"{case.name} jvp tangent")
    with fwAD.dual_level():
        duals = [fwAD.make_dual(a, t) for a, t in zip(args, tangents)]
        out = fwAD.unpack_dual(case.fast(*duals, backend=backend)).tangent
    close(out, expected_tangent, f"{case.name} forward_ad tangent")


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("mse", "bce", "triplet-p2", "contrastive-cosine",
                                                               "masked_mse-input")], ids=ids)
def test_hessian(backend_device, case):
    backend, device = backend_device
    args = [a.detach() for a in inputs(case, device=device)]
    got = hessian(lambda a: case.fast(a, *args[1:], backend=backend))(args[0])
    close(got, hessian(lambda a: case.oracle(a, *args[1:]))(args[0]), f"{case.name} hessian")


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("mse", "triplet-p2", "masked_mse-input")], ids=ids)
def test_third_derivative(backend_device, case):
    """Any order: the gradient of a Hessian-vector product's sum."""
    backend, device = backend_device
    args = inputs(case, device=device)

    def third(loss_fn):
        (g,) = torch.autograd.grad(loss_fn(*args), args[0], create_graph=True)
        (hv,) = torch.autograd.grad((g * g).sum(), args[0], create_graph=True)
        (t,) = torch.autograd.grad((hv * hv).sum(), args[0])
        return t

    close(third(lambda *a: case.fast(*a, backend=backend)), third(case.oracle), f"{case.name} third derivative")


@pytest.mark.parametrize("backend_device", [p for p in BACKENDS if p.values[0][0] != "torch"])
@pytest.mark.parametrize("case", [c for c in CASES if c.fused], ids=ids)
def test_ordinary_backward_never_takes_the_plain_formula(backend_device, case, monkeypatch):
    """Training without create_graph runs only the fused kernels: the plain formula, were it
    called, would fail the test."""
    backend, device = backend_device
    args = inputs(case, device=device)
    expected = torch.autograd.grad(case.oracle(*args), args)

    def refuse(*a, **k):
        raise AssertionError("the plain formula ran on the ordinary training path")

    monkeypatch.setattr(fused_autograd, "_plain_vjp", refuse)
    loss = case.fast(*args, backend=backend)
    assert type(loss.grad_fn).__name__ == "FusedLossBackward", type(loss.grad_fn).__name__
    got = torch.autograd.grad(loss, args)
    for k, (g, e) in enumerate(zip(got, expected)):
        close(g, e, f"{case.name} gradient {k}")


@pytest.mark.parametrize("backend_device", [p for p in BACKENDS if p.values[0][0] != "torch"])
@pytest.mark.parametrize("case", [c for c in CASES if c.fused], ids=ids)
def test_a_loss_kept_after_backward_holds_no_inputs(backend_device, case):
    """As torch's saved tensors are, the inputs are released by backward: a loss kept after it
    (for logging, say) does not keep a model's outputs alive."""
    backend, device = backend_device
    outputs = [t * 1.0 for t in inputs(case, device=device)]  # not leaves, as a model's outputs
    alive = [weakref.ref(t) for t in outputs]
    loss = case.fast(*outputs, backend=backend)
    loss.backward()
    del outputs
    gc.collect()
    assert loss.grad_fn is not None
    assert [r() is None for r in alive] == [True] * len(alive)



@pytest.mark.parametrize("backend_device", [p for p in BACKENDS if p.values[0][0] != "torch"])
@pytest.mark.parametrize("case", [c for c in CASES if c.fused], ids=ids)
def test_evaluation_computes_no_gradient(backend_device, case, monkeypatch):
    """Under no_grad and inference_mode the kernel is asked for no gradient, even of inputs that
    require grad (inside an autograd.Function they would be asked for), and the loss is the same."""
    backend, device = backend_device
    args = inputs(case, device=device)
    expected = case.fast(*args, backend=backend).detach()
    asked = []
    for name in ("pointwise", "row", "masked_mse", "batch"):
        module = importlib.import_module(f"fastloss.ops.{name}")

        def fused(backend_, config, needs, tensors, real=module.FAMILY.fused):
            asked.append(tuple(needs))
            return real(backend_, config, needs, tensors)
        monkeypatch.setattr(module, "FAMILY", dataclasses.replace(module.FAMILY, fused=fused))
    for context in (torch.no_grad, torch.inference_mode):
        asked.clear()
        with context():
            got = case.fast(*args, backend=backend)
        assert asked and not any(any(n) for n in asked), f"{context.__name__}: the kernel was asked for {asked}"
        close(got, expected, f"{case.name} under {context.__name__}")
    asked.clear()
    case.fast(*args, backend=backend)
    assert any(any(n) for n in asked), f"with grad enabled the kernel computes the gradients: {asked}"
