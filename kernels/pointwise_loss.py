"""Triton implementation of the pointwise-loss contract (see csrc/ops.cpp for the schema).

One program per BLOCK elements: it loads input, target (and weight), applies the formula in
float32 (float64 for float64 inputs), writes the gradients when asked, and stores the block's
loss sum as one partial; a one-program kernel adds the partials in a fixed order. The split
depends only on the element count, so the same inputs give the same bits on every run.
"""

import math
import struct

import torch
import triton
import triton.language as tl

# Loss ids, the same numbers as fastloss::PointwiseLoss in csrc/formulas/pointwise.h.
SQUARED_ERROR, ABSOLUTE_ERROR, SMOOTH_L1, HUBER, BCE_WITH_LOGITS = 0, 1, 2, 3, 4
# Reduction ids, as torch's at::Reduction.
NONE, MEAN, SUM = 0, 1, 2

BLOCK = 4096
FINISH_BLOCK = 1024


@triton.jit
def _sign(d):
    # torch.sign: 0 for NaN, so L1's gradient at NaN is 0 as in torch
    return (d > 0).to(d.dtype) - (d < 0).to(d.dtype)


def scalar_bits(value: float, acc: torch.dtype) -> int:
    """The bits of `value` rounded to the accumulation dtype, as an int for `_scalar` to cast
    back: exact for every value, infinities, NaN and magnitudes past float32's range included
    (a Python float argument reaches a kernel as float32)."""
    if acc == torch.float64:
        return struct.unpack("<q", struct.pack("<d", value))[0]
    try:
        return struct.unpack("<i", struct.pack("<f", value))[0]
    except OverflowError:  # rounds past float32's largest value: infinity, as a C cast gives
        return struct.unpack("<i", struct.pack("<f", math.copysign(math.inf, value)))[0]


@triton.jit
def _scalar(bits, ACC: tl.constexpr):
    """A scalar parameter from its scalar_bits."""
    if ACC == tl.float64:
        value = bits.to(tl.int64).to(tl.float64, bitcast=True)
    else:
        value = bits.to(tl.int32).to(tl.float32, bitcast=True)
    return value


@triton.jit
def _is_one(value, ACC: tl.constexpr):
    """value == 1, by its bits: GPU compares may treat NaN as equal to anything (fast math)."""
    if ACC == tl.float64:
        one = value.to(tl.int64, bitcast=True) == 0x3FF0000000000000
    else:
        one = value.to(tl.int32, bitcast=True) == 0x3F800000
    return one


@triton.jit
def _div_rn(a, b):
    """a / b correctly rounded: Triton's float32 division is an approximate one on GPUs."""
    if a.dtype == tl.float32:
        r = tl.math.div_rn(a, b)
    else:
        r = a / b
    return r


@triton.jit
def _log1p_nonneg(y):
    # log(1 + y) for y >= 0, exact for tiny y: log(u) * y / (u - 1) corrects u = 1 + y's rounding
    u = 1.0 + y
    d = u - 1.0
    return tl.where(d == 0.0, y, tl.log(u) * (y / tl.where(d == 0.0, 1.0, d)))


@triton.jit
def pointwise_formula(x, t, param, aux, LOSS: tl.constexpr, HAS_AUX: tl.constexpr):
    """(loss, d loss / d x, d loss / d t) of the loss LOSS, elementwise; the same formulas as
    csrc/formulas/pointwise.h. param: beta or delta; aux: BCE's pos_weight where HAS_AUX."""
    diff = x - t
    abs_diff = tl.abs(diff)
    if LOSS == 0:  # squared error
        loss = diff * diff
        d_input = 2.0 * diff
        d_target = -d_input
    elif LOSS == 1:  # absolute error
        loss = abs_diff
        d_input = _sign(diff)
        d_target = -d_input
    elif LOSS == 2:  # smooth L1, beta > 0
        loss = tl.where(abs_diff < param, 0.5 * diff * diff / param, abs_diff - 0.5 * param)
        d_input = tl.where(diff < -param, -1.0, tl.where(diff > param, 1.0, diff / param))
        d_target = -d_input
    elif LOSS == 3:  # Huber, delta > 0
        loss = tl.where(abs_diff < param, 0.5 * diff * diff, param * (abs_diff - 0.5 * param))
        d_input = tl.where(diff < -param, -param, tl.where(diff > param, param, diff))
        d_target = -d_input
    else:  # BCE with logits, pos_weight = aux where HAS_AUX
        e = tl.exp(-tl.abs(x))
        log1p_e = _log1p_nonneg(e)
        softplus_neg = log1p_e + tl.where(x < 0, -x, 0.0)
        # correctly rounded, as on the CPU: sigmoid - t near t = 1 would magnify a 2-ulp divide
        sigmoid = _div_rn(tl.where(x < 0, e, 1.0), 1.0 + e)
        if HAS_AUX:
            loss = (1.0 - t) * x + (1.0 + (aux - 1.0) * t) * softplus_neg
            pt = aux * t  # c again, in torch's order for the gradient (NaN for an infinite t)
            d_input = (pt + 1.0 - t) * sigmoid - pt
            d_target = aux * softplus_neg - (log1p_e + tl.where(x < 0, 0.0, x))
        else:
            loss = (1.0 - t) * x + softplus_neg
            d_input = sigmoid - t
            d_target = -x
    return loss, d_input, d_target


@triton.jit
def _load_operand(ptr, offs, mask, period, HAS: tl.constexpr, PERIODIC: tl.constexpr, ACC: tl.constexpr):
    if HAS:
        if PERIODIC:
            value = tl.load(ptr + offs % period, mask=mask, other=1.0).to(ACC)
        else:
            value = tl.load(ptr + offs, mask=mask, other=1.0).to(ACC)
    else:
        value = tl.full(offs.shape, 1.0, ACC)
    return value


@triton.jit(do_not_specialize=["param_bits"])
def _pointwise_loss_kernel(
    x_ptr, t_ptr, w_ptr, pw_ptr, loss_ptr, gx_ptr, gt_ptr, partial_ptr, scale_ptr,
    n, param_bits, w_period, pw_period,
    LOSS: tl.constexpr, ACC: tl.constexpr, HAS_WEIGHT: tl.constexpr, W_PERIODIC: tl.constexpr,
    HAS_POS_WEIGHT: tl.constexpr, PW_PERIODIC: tl.constexpr, WRITE_LOSS: tl.constexpr,
    MEAN_BY_N: tl.constexpr,
    GRAD_INPUT: tl.constexpr, GRAD_TARGET: tl.constexpr, HAS_SCALE_PTR: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(ACC)
    param = _scalar(param_bits, ACC)
    aux = _load_operand(pw_ptr, offs, mask, pw_period, HAS_POS_WEIGHT, PW_PERIODIC, ACC)
    loss, d_input, d_target = pointwise_formula(x, t, param, aux, LOSS, HAS_POS_WEIGHT)
    # The gradient scale: 1/N for "mean", 1/sum(weight) (on the device) for weighted "mean".
    scale = tl.full([], 1.0, ACC)
    if MEAN_BY_N:
        scale = scale / tl.cast(n, ACC)
    if HAS_SCALE_PTR:
        scale = scale * tl.load(scale_ptr)
    if HAS_WEIGHT:
        w = _load_operand(w_ptr, offs, mask, w_period, HAS_WEIGHT, W_PERIODIC, ACC)
        loss = loss * w
        d_input = d_input * w
        d_target = d_target * w
    if GRAD_INPUT:
        tl.store(gx_ptr + offs, (d_input * scale).to(gx_ptr.dtype.element_ty), mask=mask)
    if GRAD_TARGET:
        tl.store(gt_ptr + offs, (d_target * scale).to(gt_ptr.dtype.element_ty), mask=mask)
    if WRITE_LOSS:
        tl.store(loss_ptr + offs, loss.to(loss_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(partial_ptr + pid, tl.sum(tl.where(mask, loss, 0.0), axis=0))


@triton.jit
def _sum_kernel(x_ptr, partial_ptr, n, ACC: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0).to(ACC)
    tl.store(partial_ptr + pid, tl.sum(x, axis=0))


@triton.jit
def _finish_kernel(
    partial_ptr, count, out_ptr, inverse_ptr, divisor_inv_ptr, divide_by,
    ACC: tl.constexpr, HAS_OUT: tl.constexpr, HAS_INVERSE: tl.constexpr, DIVIDE: tl.constexpr,
    HAS_DIVISOR: tl.constexpr, BLOCK: tl.constexpr,
):
    """total = sum(partials) in a fixed order; out = total (/ divide_by if DIVIDE)
    (* divisor_inv if HAS_DIVISOR); inverse = 1 / total."""
    acc = tl.zeros([BLOCK], dtype=ACC)
    for start in range(0, count, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(partial_ptr + offs, mask=offs < count, other=0.0).to(ACC)
    total = tl.sum(acc, axis=0)
    if HAS_OUT:
        value = total
        if DIVIDE:
            value = value / tl.cast(divide_by, ACC)
        if HAS_DIVISOR:
            value = value * tl.load(divisor_inv_ptr)
        tl.store(out_ptr, value.to(out_ptr.dtype.element_ty))
    if HAS_INVERSE:
        tl.store(inverse_ptr, 1.0 / total)


@triton.jit
def _scale_kernel(g_ptr, go_ptr, n, ACC: tl.constexpr, BLOCK: tl.constexpr):
    factor = tl.load(go_ptr).to(ACC)
    if _is_one(factor, ACC) == 0:  # decided on the device: the last-layer case moves no memory
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ACC)
        tl.store(g_ptr + offs, (g * factor).to(g_ptr.dtype.element_ty), mask=mask)


def _acc_of(dtype: torch.dtype):
    return (tl.float64, torch.float64) if dtype == torch.float64 else (tl.float32, torch.float32)


def _device_scope(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else _NullScope()


class _NullScope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _sum_inverse(data: torch.Tensor, acc_tl, acc_torch) -> torch.Tensor:
    """1 / sum(data) as a 0-d tensor on data's device, with no host sync."""
    n = data.numel()
    blocks = max(1, triton.cdiv(n, BLOCK))
    partials = torch.empty(blocks, dtype=acc_torch, device=data.device)
    _sum_kernel[(blocks,)](data, partials, n, ACC=acc_tl, BLOCK=BLOCK)
    inverse = torch.empty((), dtype=acc_torch, device=data.device)
    _finish_kernel[(1,)](partials, blocks, inverse, inverse, inverse, 1, ACC=acc_tl, HAS_OUT=False,
                         HAS_INVERSE=True, DIVIDE=False, HAS_DIVISOR=False, BLOCK=FINISH_BLOCK)
    return inverse


def _period(input: torch.Tensor, operand: torch.Tensor | None) -> int:
    return 0 if operand is None or operand.numel() == input.numel() else operand.numel()


def pointwise_loss(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                   pos_weight: torch.Tensor | None, loss: int, reduction: int, param: float,
                   mean_by_weight_sum: bool, need_grad_input: bool,
                   need_grad_target: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, grad_input, grad_target) for same-shape contiguous tensors of one float dtype;
    each gradient as if grad_output were 1, or an empty tensor when not asked for. weight and
    pos_weight are input-sized or a block repeated over the leading elements; "mean" divides
    by sum(weight) when mean_by_weight_sum, else by N."""
    n = input.numel()
    loss_out = torch.empty_like(input) if reduction == NONE else input.new_empty(())
    # distinct empty tensors: a custom op's outputs must not alias each other
    grad_input = torch.empty_like(input) if need_grad_input else input.new_empty(0)
    grad_target = torch.empty_like(input) if need_grad_target else input.new_empty(0)
    acc_tl, acc_torch = _acc_of(input.dtype)
    with _device_scope(input):
        divisor_inv = None
        by_weight = weight is not None and mean_by_weight_sum
        if by_weight and reduction == MEAN:
            divisor_inv = _sum_inverse(weight, acc_tl, acc_torch)
        mean_by_n = reduction == MEAN and not by_weight
        if n == 0:
            if reduction != NONE:
                loss_out.fill_(0.0 if reduction == SUM else float("nan"))
            return loss_out, grad_input, grad_target
        blocks = triton.cdiv(n, BLOCK)
        partials = torch.empty(blocks if reduction != NONE else 1, dtype=acc_torch, device=input.device)
        w_period, pw_period = _period(input, weight), _period(input, pos_weight)
        _pointwise_loss_kernel[(blocks,)](
            input, target, weight if weight is not None else input,
            pos_weight if pos_weight is not None else input, loss_out, grad_input,
            grad_target, partials, divisor_inv if divisor_inv is not None else partials,
            n, scalar_bits(param, acc_torch), max(w_period, 1), max(pw_period, 1),
            LOSS=loss, ACC=acc_tl, HAS_WEIGHT=weight is not None, W_PERIODIC=w_period > 0,
            HAS_POS_WEIGHT=pos_weight is not None, PW_PERIODIC=pw_period > 0,
            WRITE_LOSS=reduction == NONE,
            MEAN_BY_N=mean_by_n,
            GRAD_INPUT=need_grad_input, GRAD_TARGET=need_grad_target,
            HAS_SCALE_PTR=divisor_inv is not None, BLOCK=BLOCK,
        )
        if reduction != NONE:
            _finish_kernel[(1,)](
                partials, blocks, loss_out, partials,
                divisor_inv if divisor_inv is not None else partials, n,
                ACC=acc_tl, HAS_OUT=True, HAS_INVERSE=False, DIVIDE=mean_by_n,
                HAS_DIVISOR=divisor_inv is not None, BLOCK=FINISH_BLOCK,
            )
    return loss_out, grad_input, grad_target


def scale_grad_(grad: torch.Tensor, grad_output: torch.Tensor) -> None:
    """grad *= grad_output in place; free (decided on the device) when a 0-d grad_output is 1."""
    if grad_output.dim() != 0:
        grad.mul_(grad_output)
        return
    n = grad.numel()
    if n == 0:
        return
    acc_tl, _ = _acc_of(grad.dtype)
    with _device_scope(grad):
        _scale_kernel[(triton.cdiv(n, BLOCK),)](grad, grad_output, n, ACC=acc_tl, BLOCK=BLOCK)
