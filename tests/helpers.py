"""Shared test utilities: per-dtype tolerances and the float64 comparison."""

import contextlib

import torch

# (rtol, atol) for values and gradients computed in float32 (or float64) and stored in dtype.
TOLERANCES = {
    torch.float64: (1e-12, 1e-14),
    torch.float32: (2e-5, 1e-6),
    torch.float16: (3e-3, 1e-6),
    torch.bfloat16: (2e-2, 1e-5),
}
DTYPES = list(TOLERANCES)


def assert_close_to_reference(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str):
    """actual (in dtype) against a float64 reference, NaN where the reference has NaN."""
    rtol, atol = TOLERANCES[dtype]
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol, equal_nan=True,
                               msg=lambda m: f"{what} ({dtype}): {m}")


def random(shape, dtype, device, requires_grad=False, scale=1.0):
    """Fresh normal values (never zeros), rounded to dtype."""
    t = (torch.randn(shape, dtype=torch.float64) * scale).to(dtype).to(device)
    return t.requires_grad_(requires_grad)


@contextlib.contextmanager
def poisoned_outputs(device):
    """Inside the block every uninitialised output is NaN, so a kernel that leaves part of its
    output unwritten shows up as NaN in the comparison. On CPU torch fills each new empty
    tensor with NaN (deterministic mode's fill_uninitialized_memory: at::empty from the C++
    kernels and torch.empty in the Triton launchers alike; outputs of 16 MiB and more come from
    fastloss's own block cache, which it does not fill). On CUDA a block of the caching
    allocator is filled with NaN and freed, to be handed out again."""
    if torch.device(device).type == "cuda":
        block = torch.empty(16 << 20, dtype=torch.float32, device=device).fill_(float("nan"))
        del block
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def assert_compiled_matches_eager(step, args, leaf, backend: str, device) -> None:
    """torch.compile(step, fullgraph=True) gives eager's value and leaf's gradient. The
    interpreted Triton kernels (CPU) compile with aot_eager: inductor would emit C++ around
    an interpreter."""
    import torch._dynamo

    torch._dynamo.reset()
    interpreted = backend == "triton" and torch.device(device).type == "cpu"
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager" if interpreted else "inductor")
    out = compiled(*args)
    out.backward()
    grad_compiled, leaf.grad = leaf.grad, None
    eager = step(*args)
    eager.backward()
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(grad_compiled, leaf.grad)
