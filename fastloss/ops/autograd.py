"""The autograd pattern every loss family shares: the fused kernel for ordinary training, the
plain formula for everything else autograd can ask of a loss.

A family (pointwise, masked MSE, row losses, and the ones to come) describes its fused op with
a `LossFamily`: how to run the kernel of a backend, which returns the loss and - for the
leading `n_fused_grads` tensors that need them - their gradients as if grad_output were 1; how
to rescale such a gradient by grad_output in place; and the same loss as a plain torch formula
(fastloss/reference.py) on the same tensors. `apply_fused_loss` then runs it under one
autograd.Function, which answers each request of autograd this way:

- Ordinary training (backward without create_graph): the gradients come from the forward pass.
  Backward rescales them in place (free when grad_output is 1) and hands them to autograd
  without a copy; a second backward through the same graph (retain_graph=True) reruns the
  kernel for them. This path is exactly as fast as the kernel alone.
- A differentiable backward (create_graph=True: double backward, MAML, gradient penalties,
  Hessian-vector products) and backward inside any torch.func transform (grad, vjp, jacrev):
  backward differentiates the plain formula with torch.func.vjp, so the gradient it returns
  is itself differentiable, to any order, and equals torch's.
- Forward-mode AD (torch.func.jvp, jacfwd, torch.autograd.forward_ad): the jvp rule is the
  transpose of that vjp (a vjp of the vjp, which is linear in its cotangent); it needs no
  nested forward-mode level, which forward_ad does not support.
- vmap (per-sample losses and gradients): the vmap rule runs the plain formula, vmapped.

Three autograd.Functions share these rules: `FusedLoss` for eager calls (with the jvp rule),
`FusedLossCompiled` for torch.compile (dynamo traces no custom jvp), `FusedLossTransforms`
inside torch.func transforms (setup_context style, with the vmap rule).

A family whose gradient is more than a rescale of unit-grad_output gradients (the all-pairs
softmax losses: with reduction "none" each row's grad_output weights the coefficients that every
other row's gradient sums) declares a `SweptLossFamily` instead: its forward op returns the loss
and the per-row statistics the backward sweep needs, and its backward op takes grad_output.
`apply_swept_loss` runs it under `SweptLoss`/`SweptLossCompiled`, which answer create_graph,
forward mode and the transforms with the same plain-formula rules as above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.autograd.forward_ad as forward_ad

Tensors = Sequence[torch.Tensor | None]


@dataclass(frozen=True, eq=False)
class LossFamily:
    """One fused op family, as the shared autograd Function sees it.

    fused(backend, config, needs, tensors) -> (loss, grad_0, ..., grad_{k-1}): the kernel; grad_i
        is the gradient of tensors[i] as if grad_output were 1 where needs[i], else empty.
    rescale(backend, grad, grad_output): grad *= grad_output in place (grad_output of the
        loss's shape: 0-d, or the unreduced shape for reduction "none").
    plain(config, tensors) -> loss: the same loss in torch ops, differentiable in every tensor.
    n_fused_grads: k, how many leading tensors the kernel differentiates.
    """

    name: str
    fused: Callable[[str, tuple, tuple, Tensors], tuple[torch.Tensor, ...]]
    rescale: Callable[[str, torch.Tensor, torch.Tensor], None]
    plain: Callable[[tuple, Tensors], torch.Tensor]
    n_fused_grads: int


N_META_ARGS = 3  # family, config, backend: the arguments before the tensors


def _transforms_active() -> bool:
    return torch._C._are_functorch_transforms_active()


def _plain_of(family: LossFamily, config: tuple, tensors: Tensors, index: Sequence[int]):
    """The plain formula as a function of tensors[i] for i in index, the others held fixed."""
    def loss_of(*chosen):
        full = list(tensors)
        for i, t in zip(index, chosen):
            full[i] = t
        return family.plain(config, full)
    return loss_of


def _plain_vjp(family: LossFamily, config: tuple, tensors: Tensors, wanted: Sequence[bool],
               cotangent: torch.Tensor) -> list[torch.Tensor | None]:
    """The gradients of the plain formula for the tensors in `wanted`, differentiable."""
    index = [i for i, w in enumerate(wanted) if w and tensors[i] is not None]
    if not index:
        return [None] * len(tensors)
    _, vjp_fn = torch.func.vjp(_plain_of(family, config, tensors, index), *(tensors[i] for i in index))
    grads = vjp_fn(cotangent)
    result: list[torch.Tensor | None] = [None] * len(tensors)
    for i, g in zip(index, grads):
        result[i] = g
    return result


def _backward(ctx, grad_loss):
    family, config, backend = ctx.family, ctx.config, ctx.backend
    # Only the jvp rule (which runs in the forward pass) reads ctx.tensors: released here, so that
    # a loss kept after backward holds its inputs no longer than torch's saved tensors would.
    ctx.tensors = None
    if torch.is_grad_enabled() or _transforms_active():
        wanted = ctx.needs_input_grad[N_META_ARGS:]
        return (None,) * N_META_ARGS + tuple(_plain_vjp(family, config, ctx.saved_tensors, wanted, grad_loss))
    needs = ctx.needs_input_grad[N_META_ARGS:N_META_ARGS + family.n_fused_grads]
    grads, ctx.grads = ctx.grads, None
    if grads is None:  # consumed by an earlier backward through the same graph (retain_graph=True)
        _, *grads = family.fused(backend, config, needs, ctx.saved_tensors)
    result = [None] * len(ctx.needs_input_grad)
    for i, need in enumerate(needs):
        if need:
            family.rescale(backend, grads[i], grad_loss)
            result[N_META_ARGS + i] = grads[i]
    return tuple(result)


def _jvp(ctx, _family, _config, _backend, *tangents):
    family, config = ctx.family, ctx.config
    tensors = ctx.tensors
    index = [i for i, t in enumerate(tangents) if t is not None]
    if not index:
        return None
    loss, vjp_fn = torch.func.vjp(_plain_of(family, config, tensors, index), *(tensors[i] for i in index))
    # vjp_fn is linear in its cotangent u: the vjp of u -> vjp_fn(u) is the jvp.
    _, transpose = torch.func.vjp(vjp_fn, torch.zeros_like(loss))
    (tangent,) = transpose(tuple(tangents[i] for i in index))
    return tangent


class FusedLossCompiled(torch.autograd.Function):
    """What torch.compile traces: forward and backward (dynamo does not trace a custom jvp)."""

    @staticmethod
    def forward(ctx, family: LossFamily, config: tuple, backend: str, *tensors):
        # The gradients backward will rescale, computed in this pass: those autograd needs.
        needs = ctx.needs_input_grad[N_META_ARGS:N_META_ARGS + family.n_fused_grads]
        loss, *grads = family.fused(backend, config, needs, tensors)
        ctx.family, ctx.config, ctx.backend = family, config, backend
        if any(needs):  # else backward is never reached
            ctx.save_for_backward(*tensors)
        ctx.tensors = tensors  # for the jvp rule: forward-mode AD has no backward to save for
        # Held, not saved: backward hands them to autograd, which keeps them as .grad uncopied.
        ctx.grads = grads
        return loss

    backward = staticmethod(_backward)


class FusedLoss(FusedLossCompiled):
    """Eager calls outside torch.func transforms, forward-mode AD included. (ctx-style: a
    setup_context Function costs about 8 us more per call, in signature binding.)"""

    jvp = staticmethod(_jvp)


class FusedLossTransforms(torch.autograd.Function):
    """Calls inside torch.func transforms, which need setup_context and the vmap rule. No
    gradients in the forward: the transforms' backward differentiates the plain formula."""

    @staticmethod
    def forward(family: LossFamily, config: tuple, backend: str, *tensors):
        return family.fused(backend, config, (False,) * family.n_fused_grads, tensors)[0]

    @staticmethod
    def setup_context(ctx, inputs, output):
        family, config, backend, *tensors = inputs
        ctx.family, ctx.config, ctx.backend, ctx.grads = family, config, backend, None
        ctx.save_for_backward(*tensors)
        ctx.tensors = tensors

    backward = staticmethod(_backward)
    jvp = staticmethod(_jvp)

    @staticmethod
    def vmap(info, in_dims, family, config, backend, *tensors):
        loss = torch.vmap(lambda *ts: family.plain(config, ts), in_dims=tuple(in_dims[N_META_ARGS:]),
                          randomness=info.randomness)(*tensors)
        return loss, 0


@dataclass(frozen=True, eq=False)
class SweptLossFamily:
    """A family with a forward sweep and a backward sweep.

    forward(backend, config, tensors) -> (loss, stats): the loss and the tensors backward needs.
    backward(backend, config, tensors, stats, grad_output, needs) -> one gradient (or None) per
        tensor, for those where needs[i].
    plain(config, tensors) -> loss: the same loss in torch ops, differentiable in every tensor.
    """

    name: str
    forward: Callable[[str, tuple, Tensors], tuple[torch.Tensor, tuple]]
    backward: Callable[[str, tuple, Tensors, tuple, torch.Tensor, tuple], list]
    plain: Callable[[tuple, Tensors], torch.Tensor]
    n_fused_grads: int = 0  # (what FusedLossTransforms asks of fused: no gradients)

    def fused(self, backend: str, config: tuple, needs: tuple, tensors: Tensors) -> tuple[torch.Tensor]:
        return (self.forward(backend, config, tensors)[0],)


class SweptLossCompiled(torch.autograd.Function):
    """A SweptLossFamily's forward and backward sweeps (what torch.compile traces)."""

    @staticmethod
    def forward(ctx, family: SweptLossFamily, config: tuple, backend: str, *tensors):
        loss, stats = family.forward(backend, config, tensors)
        ctx.family, ctx.config, ctx.backend, ctx.n_tensors = family, config, backend, len(tensors)
        ctx.save_for_backward(*tensors, *stats)
        ctx.tensors = tensors  # for the jvp rule
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        family, config, backend = ctx.family, ctx.config, ctx.backend
        ctx.tensors = None
        saved = ctx.saved_tensors
        tensors, stats = saved[:ctx.n_tensors], saved[ctx.n_tensors:]
        wanted = ctx.needs_input_grad[N_META_ARGS:]
        if torch.is_grad_enabled() or _transforms_active():
            grads = _plain_vjp(family, config, tensors, wanted, grad_loss)
        else:
            grads = family.backward(backend, config, tensors, stats, grad_loss, wanted)
        return (None,) * N_META_ARGS + tuple(grads)


class SweptLoss(SweptLossCompiled):
    """Eager calls outside torch.func transforms, forward-mode AD included."""

    jvp = staticmethod(_jvp)


def apply_swept_loss(family: SweptLossFamily, config: tuple, backend: str, tensors: Tensors) -> torch.Tensor:
    """The loss of `tensors` by the two sweeps of `backend`, with full autograd support."""
    if _transforms_active():
        function = FusedLossTransforms
    else:
        function = SweptLossCompiled if torch.compiler.is_compiling() else SweptLoss
    return function.apply(family, config, backend, *tensors)


def apply_fused_loss(family: LossFamily, config: tuple, backend: str, tensors: Tensors) -> torch.Tensor:
    """The loss of `tensors` by the fused kernel of `backend`, with full autograd support."""
    if not torch.is_grad_enabled() and forward_ad._current_level < 0 and not _transforms_active():
        # Evaluation (no_grad, inference_mode): nothing can ask this call for a gradient, even of
        # inputs that require grad, so the kernel computes none (inside an autograd.Function the
        # inputs' requires_grad would still ask for them).
        return family.fused(backend, config, (False,) * family.n_fused_grads, tensors)[0]
    if _transforms_active():
        function = FusedLossTransforms
    else:
        function = FusedLossCompiled if torch.compiler.is_compiling() else FusedLoss
    return function.apply(family, config, backend, *tensors)
