"""torch's own test data through fastloss: for every loss torch has, the OpInfo entries of
torch.testing._internal.common_methods_invocations.op_db give the inputs torch's test suite
runs (every dtype the OpInfo lists, requires_grad where it is floating point) and the inputs it
must reject. fastloss must return torch's dtype and values (and gradients), and raise torch's
exception type with torch's message where torch raises, on every backend runnable here."""

import warnings

import pytest
import torch
import torch.nn.functional as F

import fastloss
from conftest import backend_params
from helpers import TOLERANCES

FASTLOSS = {
    "nn.functional.mse_loss": fastloss.mse_loss,
    "nn.functional.l1_loss": fastloss.l1_loss,
    "nn.functional.smooth_l1_loss": fastloss.smooth_l1_loss,
    "nn.functional.huber_loss": fastloss.huber_loss,
    "nn.functional.binary_cross_entropy_with_logits": fastloss.binary_cross_entropy_with_logits,
    "nn.functional.triplet_margin_loss": fastloss.triplet_margin_loss,
    "nn.functional.cosine_embedding_loss": fastloss.cosine_embedding_loss,
}
HALF = (torch.float16, torch.bfloat16)
WITH_ERROR_INPUTS = ["nn.functional.l1_loss", "nn.functional.huber_loss", "nn.functional.triplet_margin_loss"]


def _opinfo(name: str):
    """torch's OpInfo of a loss (its module needs the expecttest package: `make test` installs
    it; the GPU machine may lack it)."""
    pytest.importorskip("expecttest")
    from torch.testing._internal.common_methods_invocations import op_db

    (op,) = [op for op in op_db if op.name == name and not op.variant_test_name]
    return op


def test_every_loss_has_its_opinfo():
    pytest.importorskip("expecttest")
    from torch.testing._internal.common_methods_invocations import op_db

    assert sorted(op.name for op in op_db if op.name in FASTLOSS and not op.variant_test_name) == sorted(FASTLOSS)
    assert sorted(op.name for op in op_db if op.name in FASTLOSS and op.error_inputs_func) == sorted(WITH_ERROR_INPUTS)


def _samples(op, dtype, device):
    grad = dtype.is_floating_point or dtype.is_complex
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(op.sample_inputs(device, dtype, requires_grad=grad and op.supports_autograd))


def _call(fn, sample, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(sample.input, *sample.args, **sample.kwargs, **kwargs)


def _tensors(sample):
    return [t for t in (sample.input, *sample.args, *sample.kwargs.values())
            if isinstance(t, torch.Tensor) and t.requires_grad]


def _float64(sample):
    """The sample with its floating tensors in float64: the precise computation."""
    def up(t):
        if isinstance(t, torch.Tensor) and t.dtype.is_floating_point:
            return t.detach().double().requires_grad_(t.requires_grad)
        return t
    return type(sample)(up(sample.input), args=tuple(up(a) for a in sample.args),
                        kwargs={k: up(v) for k, v in sample.kwargs.items()})


def _check_value(actual, expected, precise, dtype, what):
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype}, torch gives {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)}, torch gives {tuple(expected.shape)}"
    if precise is not None:
        # torch rounds each intermediate to the half type, fastloss once: it must be at least as
        # close to the float64 computation as torch is (within a rounding of the result).
        rtol, atol = TOLERANCES[actual.dtype]
        ours = (actual.double() - precise.double()).abs()
        theirs = (expected.double() - precise.double()).abs()
        slack = atol + rtol * precise.double().abs()
        bad = ~(ours <= theirs + slack)
        assert not bad.any(), f"{what}: {actual[bad]} further from {precise[bad]} than torch's {expected[bad]}"
    elif actual.dtype in TOLERANCES:
        rtol, atol = TOLERANCES[actual.dtype]
        torch.testing.assert_close(actual, expected, rtol=max(rtol, 1e-6), atol=max(atol, 1e-7), equal_nan=True,
                                   msg=lambda m: f"{what}: {m}")
    else:
        torch.testing.assert_close(actual, expected, equal_nan=True, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("name", list(FASTLOSS), ids=lambda name: name.split(".")[-1])
def test_sample_inputs_give_torch_results(backend_device, name):
    backend, device = backend_device
    op = _opinfo(name)
    fast = FASTLOSS[op.name]
    checked = 0
    for dtype in sorted(op.supported_dtypes(torch.device(device).type), key=str):
        for sample in _samples(op, dtype, device):
            what = f"{op.name} {dtype} input {tuple(sample.input.shape)} kwargs {sample.kwargs}"
            expected = _call(op.op, sample)
            actual = _call(fast, sample, backend=backend)
            sample64 = _float64(sample)
            precise = _call(op.op, sample64) if dtype in HALF else None
            _check_value(actual, expected, precise, dtype, what)
            leaves = _tensors(sample)
            if leaves and expected.requires_grad:
                g = torch.rand_like(expected.detach()) + 0.5
                ref = torch.autograd.grad(expected, leaves, g, allow_unused=True)
                got = torch.autograd.grad(actual, leaves, g, allow_unused=True)
                prec = torch.autograd.grad(precise, _tensors(sample64), g.double(), allow_unused=True) \
                    if precise is not None and precise.requires_grad else [None] * len(ref)
                for k, (a, e, p) in enumerate(zip(got, ref, prec)):
                    if e is None:
                        assert a is None or not a.any(), f"{what}: gradient {k} where torch has none"
                        continue
                    _check_value(a, e, p, dtype, f"{what} gradient {k}")
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("name", WITH_ERROR_INPUTS, ids=lambda name: name.split(".")[-1])
def test_error_inputs_raise_as_torch(backend_device, name):
    backend, device = backend_device
    op = _opinfo(name)
    fast = FASTLOSS[op.name]
    errors = list(op.error_inputs(device))
    assert errors
    for error in errors:
        with pytest.raises(error.error_type, match=error.error_regex):
            _call(fast, error.sample_input, backend=backend)


DTYPES_ANY = [torch.bool, torch.uint8, torch.int64, torch.float16, torch.bfloat16, torch.float32, torch.float64,
              torch.complex64]


def _tensor(shape, dtype, gen, device="cpu"):
    x = torch.randn(shape, dtype=torch.float64, generator=gen).to(device)
    if dtype == torch.bool:
        return x > 0
    if not (dtype.is_floating_point or dtype.is_complex):
        return (x * 3).abs().to(dtype)
    return x.to(dtype)


PAIRS = {
    "mse": (F.mse_loss, fastloss.mse_loss),
    "l1": (F.l1_loss, fastloss.l1_loss),
    "smooth_l1": (F.smooth_l1_loss, fastloss.smooth_l1_loss),
    "huber": (F.huber_loss, fastloss.huber_loss),
    "bce": (F.binary_cross_entropy_with_logits, fastloss.binary_cross_entropy_with_logits),
}


def _outcome(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(*args, **kwargs), None
        except Exception as exc:  # noqa: BLE001 - the type is what is compared
            return None, exc


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("loss", list(PAIRS) + ["triplet", "cosine_embedding"])
def test_every_dtype_pair_as_torch(backend_device, loss):
    """Every pair of dtypes for the two operands (and weights of another dtype): torch's result
    dtype and value, or torch's exception type, which the message names fastloss's call in."""
    backend, device = backend_device
    gen = torch.Generator().manual_seed(1)
    for d1 in DTYPES_ANY:
        for d2 in DTYPES_ANY:
            extra = {}
            if loss == "triplet":
                args = [_tensor((4, 5), d1, gen, device), _tensor((4, 5), d2, gen, device), _tensor((4, 5), d1, gen, device)]
                ours, theirs = fastloss.triplet_margin_loss, F.triplet_margin_loss
            elif loss == "cosine_embedding":
                y = _tensor((4,), d2, gen, device)
                y = y.sign() if y.dtype.is_floating_point else y
                args = [_tensor((4, 5), d1, gen, device), _tensor((4, 5), d1, gen, device), y]
                ours, theirs = fastloss.cosine_embedding_loss, F.cosine_embedding_loss
            else:
                theirs, ours = PAIRS[loss]
                args = [_tensor((4, 5), d1, gen, device), _tensor((4, 5), d2, gen, device)]
                if loss in ("mse", "huber") and d1.is_floating_point and d2.is_floating_point:
                    weight_dtype = torch.float64 if d1 != torch.float64 else torch.float16
                    extra["weight"] = _tensor((4, 5), weight_dtype, gen, device).abs()
            expected, torch_error = _outcome(theirs, *args, **extra)
            actual, error = _outcome(ours, *args, **extra, backend=backend)
            what = f"{loss} {d1} {d2} {list(extra)}"
            if torch_error is not None:
                assert error is not None, f"{what}: torch raises {torch_error!r}, fastloss returns {actual}"
                assert type(error) is type(torch_error), f"{what}: {error!r} where torch raises {torch_error!r}"
                assert str(torch_error) in str(error) and f"fastloss.{ours.__name__}" in str(error), what
                continue
            assert error is None, f"{what}: fastloss raises {error!r}, torch returns {expected}"
            precise = None
            if any(a.dtype in HALF for a in [*args, *extra.values()]) and expected.dtype in TOLERANCES:
                up = [a.double() if a.dtype.is_floating_point else a for a in args]
                precise = theirs(*up, **{k: v.double() for k, v in extra.items()})
            _check_value(actual, expected, precise, expected.dtype, what)


@pytest.mark.parametrize("backend_device", backend_params())
def test_triplet_any_leading_dimensions(backend_device):
    """torch takes (..., D) triplets: distances along the last dimension, the mean over the rest."""
    backend, device = backend_device
    gen = torch.Generator().manual_seed(2)
    a, p, n = (torch.randn(2, 4, 3, dtype=torch.float64, generator=gen).to(device).requires_grad_() for _ in range(3))
    for reduction in ("none", "mean", "sum"):
        ours = fastloss.triplet_margin_loss(a, p, n, reduction=reduction, backend=backend)
        theirs = F.triplet_margin_loss(a, p, n, reduction=reduction)
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs)
        g = torch.rand_like(theirs)
        for x, y in zip(torch.autograd.grad(ours, (a, p, n), g), torch.autograd.grad(theirs, (a, p, n), g)):
            torch.testing.assert_close(x, y)


@pytest.mark.parametrize("backend_device", backend_params())
def test_contrastive_any_leading_dimensions(backend_device):
    backend, device = backend_device
    gen = torch.Generator().manual_seed(4)
    x1, x2 = (torch.randn(3, 5, 7, dtype=torch.float64, generator=gen).to(device) for _ in range(2))
    y = (torch.rand(3, 5, generator=gen) < 0.5).double().to(device)
    flat = fastloss.contrastive_loss(x1.reshape(15, 7), x2.reshape(15, 7), y.reshape(15), reduction="none",
                                     backend=backend)
    torch.testing.assert_close(fastloss.contrastive_loss(x1, x2, y, reduction="none", backend=backend),
                               flat.reshape(3, 5))
    torch.testing.assert_close(fastloss.contrastive_loss(x1, x2, y, backend=backend), flat.mean())


AUTOCAST_CASES = {
    "mse": lambda m, x, t, w: m.mse_loss(x, t),
    "mse-weighted": lambda m, x, t, w: m.mse_loss(x, t, weight=w),  # torch's Python arithmetic: stays bfloat16
    "l1": lambda m, x, t, w: m.l1_loss(x, t),
    "smooth_l1": lambda m, x, t, w: m.smooth_l1_loss(x, t, beta=0.5),
    "huber-weighted": lambda m, x, t, w: m.huber_loss(x, t, delta=0.7, weight=w),
    "bce": lambda m, x, t, w: m.binary_cross_entropy_with_logits(x, t.sigmoid(), weight=w),
    "triplet": lambda m, x, t, w: m.triplet_margin_loss(x, t, w),
    "cosine_embedding": lambda m, x, t, w: m.cosine_embedding_loss(x, t, torch.ones(x.shape[0], device=x.device)),
}


@pytest.mark.parametrize("backend_device", backend_params())
@pytest.mark.parametrize("name", list(AUTOCAST_CASES))
def test_autocast_as_torch(backend_device, name):
    """Inside torch.autocast the losses on autocast's float32 list compute and return float32."""
    backend, device = backend_device
    gen = torch.Generator().manual_seed(6)
    x, t, w = (torch.randn(6, 9, generator=gen).to(device, torch.bfloat16) for _ in range(3))
    ours = lambda *a, **k: getattr(fastloss, a[0])(*a[1:], **k, backend=backend)  # noqa: E731

    class Fast:
        def __getattr__(self, attr):
            return lambda *a, **k: ours(attr, *a, **k)

    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        expected = AUTOCAST_CASES[name](F, x, t, w.abs())
        actual = AUTOCAST_CASES[name](Fast(), x, t, w.abs())
    assert actual.dtype == expected.dtype
    rtol, atol = TOLERANCES[expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def test_the_peer_and_oracle_packages_are_here():
    """`make test` installs expecttest (torch's OpInfo data), pytorch-metric-learning (the
    in-batch losses' peer) and scikit-learn (the examples' data): where they are missing the tests comparing with them skip, which is
    allowed only on the GPU validation machine (it cannot install packages)."""
    if torch.cuda.is_available():
        pytest.skip("the GPU validation machine has no package index")
    import expecttest  # noqa: F401
    import pytorch_metric_learning  # noqa: F401
    import sklearn  # noqa: F401  (the examples' data)
