"""Triton implementation of the masked patch-MSE contract (see csrc/ops.cpp for the schema).

One program per patch row: a row whose mask is 0 is not read, only its gradient row zeroed;
otherwise the target is optionally normalised by the row's mean and unbiased variance, the
squared error summed in float32 (float64 for float64), and the gradient written. Row sums go
to one partial each, added by one program in a fixed order: the same bits every run.
"""

import torch
import triton
import triton.language as tl

from .pointwise_loss import FINISH_BLOCK, _acc_of, _device_scope, _finish_kernel, _scalar, _sum_inverse, scalar_bits

MAX_BLOCK_P = 4096


@triton.jit(do_not_specialize=["eps_bits"])
def _masked_mse_kernel(x_ptr, t_ptr, m_ptr, g_ptr, partial_ptr, inv_ptr, p, eps_bits,
                       NORM: tl.constexpr, GRAD: tl.constexpr, ACC: tl.constexpr,
                       BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = row * p
    m = tl.load(m_ptr + row).to(ACC)
    result = tl.zeros([], dtype=ACC)
    if m == 0.0:
        if GRAD:
            for start in range(0, p, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                tl.store(g_ptr + base + offs, tl.zeros([BLOCK], dtype=ACC).to(g_ptr.dtype.element_ty),
                         mask=offs < p)
    else:
        pf = tl.cast(p, ACC)
        mean = tl.zeros([], dtype=ACC)
        inv_std = tl.full([], 1.0, ACC)
        if NORM:
            acc = tl.zeros([BLOCK], dtype=ACC)
            for start in range(0, p, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                acc += tl.load(t_ptr + base + offs, mask=offs < p, other=0.0).to(ACC)
            mean = tl.sum(acc, axis=0) / pf
            acc = tl.zeros([BLOCK], dtype=ACC)
            for start in range(0, p, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                c = tl.load(t_ptr + base + offs, mask=offs < p, other=0.0).to(ACC) - mean
                acc += tl.where(offs < p, c * c, 0.0)
            var = tl.sum(acc, axis=0) / (pf - 1.0)
            inv_std = 1.0 / tl.sqrt(var + _scalar(eps_bits, ACC))
        scale = m * tl.load(inv_ptr) / pf
        acc = tl.zeros([BLOCK], dtype=ACC)
        for start in range(0, p, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            inside = offs < p
            x = tl.load(x_ptr + base + offs, mask=inside, other=0.0).to(ACC)
            t = tl.load(t_ptr + base + offs, mask=inside, other=0.0).to(ACC)
            if NORM:
                t = (t - mean) * inv_std
            diff = tl.where(inside, x - t, 0.0)
            acc += diff * diff
            if GRAD:
                tl.store(g_ptr + base + offs, (2.0 * diff * scale).to(g_ptr.dtype.element_ty), mask=inside)
        result = m * tl.sum(acc, axis=0) / pf
    tl.store(partial_ptr + row, result)


def masked_mse_loss(input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_target: bool,
                    eps: float, need_grad_input: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, grad_input) for input, target (R, P) and mask (R,) of one float dtype."""
    rows = mask.numel()
    p = input.numel() // rows if rows else 0
    loss = input.new_empty(())
    grad = torch.empty_like(input) if need_grad_input else input.new_empty(0)
    acc_tl, acc_torch = _acc_of(input.dtype)
    with _device_scope(input):
        inverse = _sum_inverse(mask, acc_tl, acc_torch)
        if rows == 0:
            loss.fill_(float("nan"))  # 0 / 0
            return loss, grad
        partials = torch.empty(rows, dtype=acc_torch, device=input.device)
        block = min(MAX_BLOCK_P, triton.next_power_of_2(max(p, 1)))
        _masked_mse_kernel[(rows,)](input, target, mask, grad, partials, inverse, p, scalar_bits(eps, acc_torch),
                                    NORM=norm_target, GRAD=need_grad_input, ACC=acc_tl, BLOCK=block)
        _finish_kernel[(1,)](partials, rows, loss, partials, inverse, 1, ACC=acc_tl, HAS_OUT=True,
                             HAS_INVERSE=False, DIVIDE=False, HAS_DIVISOR=True, BLOCK=FINISH_BLOCK)
    return loss, grad
