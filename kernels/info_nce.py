"""Triton implementation of the all-pairs softmax contract (see csrc/ops.cpp and
csrc/formulas/info_nce.h): the per-row (and per-column) log-sum-exp of the logits
l_ij = (a_i . b_j) * scale, scale = 1 / temperature, and the backward sweep over the same logits.

Statistics: one program per block of BLOCK_M rows of a walks b's rows in blocks of BLOCK_N, in
order: the tile of inner products by tl.dot over D in BLOCK_K steps (any n, m, D: masked), then
the online log-sum-exp of info_nce.h (running max and rescaled sum; the shift is 0 while nothing
is seen, so that neither the empty state nor masked -inf entries make a NaN, and NaN logits reach
the sum, never the max). The column statistics: one program per block of b's rows walks a's, but
computes each tile as the row sweep does and transposes it, so that the row sweep, the column
sweep and the gradient see the same bits of every logit: where one logit dominates, exp(l - lse)
is then exactly 1 (in float32 two orders of one sum differ by 1e-2 at logits of 1e5, which would
make a 1% error in the coefficient). A column term given the row statistics (NT-Xent: a is b,
col_lse = lse) uses l_ij against a sum of l_ji: equal only up to that rounding.

Gradient: one program per block of rows of a and per chunk of BLOCK_D columns of D walks b's
blocks in order, recomputes the logits tile, turns it into the coefficient tile of info_nce.h
and adds C times the chunk of b into its own accumulator: row-owned, no atomics, the same bits
every run; b's gradient (need_grad_b) by one program per block of b's rows over the same tiles,
transposed. The chunks keep the accumulator at BLOCK_M x BLOCK_D values whatever D is; the price
on a GPU is that every chunk recomputes the logits of its rows over the whole D: ceil(D / BLOCK_D)
logit products where one would do (none extra for D <= BLOCK_D; at D = 1024 the sweep does 4.5
times the multiply-adds of one that held all of D, which would not fit in registers). The
alternative, one accumulator in global memory read and written per b block, trades that for
memory traffic that would dominate.

The temperature is read on the device (no host sync). Everything in float32 (float64 for float64
inputs); float16/bfloat16 tiles are exact in TF32, so their logit products use it always.
"""

import torch
import triton
import triton.language as tl

from .batch_pair_loss import _precision
from .pointwise_loss import _acc_of, _device_scope

BLOCK_M, BLOCK_N, BLOCK_K = 32, 32, 32
MAX_BLOCK_D = 128  # the gradient's chunk of D (a power of two, at least 16 for tl.dot)
# Warps per program, the same in every kernel so that each computes its logit tiles with the same
# instructions (the same bits). ptxas for sm_90 gives the float16 gradient program 255 registers
# and a 424-byte spill with 4 warps at BLOCK_D = 128, 210 registers and none with 8 (compiled
# only: no timing).
NUM_WARPS = 8
INF = tl.constexpr(float("inf"))  # not NaN: see batch_pair_loss.py


@triton.jit
def _scale(t_ptr, ACC: tl.constexpr):
    """1 / temperature, computed in float64."""
    return (1.0 / tl.load(t_ptr).to(tl.float64)).to(ACC)


@triton.jit
def _dots(x_ptr, y_ptr, rows, cols, n_x, n_y, d, ACC: tl.constexpr, PRECISION: tl.constexpr,
          BLOCK_X: tl.constexpr, BLOCK_Y: tl.constexpr, BLOCK_K: tl.constexpr):
    """The tile of inner products x[rows] . y[cols] (0 outside the rows and columns)."""
    dots = tl.zeros([BLOCK_X, BLOCK_Y], dtype=ACC)
    for k0 in range(0, d, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rows[:, None].to(tl.int64) * d + k[None, :],
                    mask=(rows[:, None] < n_x) & (k[None, :] < d), other=0.0).to(ACC)
        y = tl.load(y_ptr + cols[:, None].to(tl.int64) * d + k[None, :],
                    mask=(cols[:, None] < n_y) & (k[None, :] < d), other=0.0).to(ACC)
        dots += tl.dot(x, tl.trans(y), input_precision=PRECISION, out_dtype=ACC)
    return dots


@triton.jit
def _kept(own, other, n_own, n_other, self_offset, SELF: tl.constexpr, COLUMNS: tl.constexpr):
    """The pairs of the [own, other] tile that take part: inside both sets, and not the dropped
    pairs (a row i, b row i + self_offset) when SELF; own are a's rows, or b's when COLUMNS."""
    keep = (own[:, None] < n_own) & (other[None, :] < n_other)
    if SELF:
        if COLUMNS:
            keep = keep & (own[:, None] != other[None, :] + self_offset)
        else:
            keep = keep & (other[None, :] != own[:, None] + self_offset)
    return keep


@triton.jit
def _target(rows, offset, period):
    """Each row's positive column (rows + offset) mod period."""
    return (rows.to(tl.int64) + offset) % period


@triton.jit
def _pair_tile(a_ptr, b_ptr, own, other, n, m, d, COLUMNS: tl.constexpr, ACC: tl.constexpr,
               PRECISION: tl.constexpr, BLOCK_OWN: tl.constexpr, BLOCK_OTHER: tl.constexpr, BLOCK_K: tl.constexpr):
    """The inner products of the program's own rows of a (COLUMNS: of b) against the other set's, as
    [own, other]. A column program computes the row programs' tile and transposes it: every sweep
    sees the same bits of every logit, so that exp(l - lse) is exactly 1 where one logit dominates
    (logits of 1e5 in float32 differ by 1e-2 between two orders of the same sum)."""
    if COLUMNS:
        dots = tl.trans(_dots(a_ptr, b_ptr, other, own, n, m, d, ACC, PRECISION, BLOCK_OTHER, BLOCK_OWN, BLOCK_K))
    else:
        dots = _dots(a_ptr, b_ptr, own, other, n, m, d, ACC, PRECISION, BLOCK_OWN, BLOCK_OTHER, BLOCK_K)
    return dots


@triton.jit
def _lse_kernel(a_ptr, b_ptr, t_ptr, lse_ptr, pos_ptr, n, m, d, offset, period, self_offset, COLUMNS: tl.constexpr,
                SELF: tl.constexpr, POS: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
                BLOCK_OWN: tl.constexpr, BLOCK_OTHER: tl.constexpr, BLOCK_K: tl.constexpr):
    """Per row of a (COLUMNS: per row of b, over a's rows): the log-sum-exp of its logits and
    (POS) its positive's logit."""
    if COLUMNS:
        n_own = m
        n_other = n
    else:
        n_own = n
        n_other = m
    own = tl.program_id(0) * BLOCK_OWN + tl.arange(0, BLOCK_OWN)
    scale = _scale(t_ptr, ACC)
    run_max = tl.full([BLOCK_OWN], -INF, ACC)
    run_sum = tl.zeros([BLOCK_OWN], dtype=ACC)
    pos = tl.full([BLOCK_OWN], float("nan"), ACC)
    target = _target(own, offset, period)
    for j0 in range(0, n_other, BLOCK_OTHER):
        other = j0 + tl.arange(0, BLOCK_OTHER)
        keep = _kept(own, other, n_own, n_other, self_offset, SELF, COLUMNS)
        logit = tl.where(keep, _pair_tile(a_ptr, b_ptr, own, other, n, m, d, COLUMNS, ACC, PRECISION, BLOCK_OWN,
                                          BLOCK_OTHER, BLOCK_K) * scale, -INF)
        # info_nce.h's merge of the tile: NaN is never the max; shift_of(-inf) = 0
        top = tl.max(tl.where(logit == logit, logit, -INF), axis=1)
        new_max = tl.where(top > run_max, top, run_max)
        shift = tl.where(new_max > -INF, new_max, 0.0)
        # the old sum is 0 while the max is -inf: its factor is 0, not e^(0 - shift), which
        # overflows (0 * inf = NaN) when the new max is below about -88 (float32)
        rescale = tl.where(run_max > -INF, tl.exp(run_max - shift), 0.0)
        run_sum = run_sum * rescale + tl.sum(tl.exp(logit - shift[:, None]), axis=1)
        run_max = new_max
        if POS:
            hit = keep & (target[:, None] == other[None, :])
            here = (target >= j0) & (target < j0 + BLOCK_OTHER)
            pos = tl.where(here, tl.sum(tl.where(hit, logit, 0.0), axis=1), pos)
    inside = own < n_own
    lse = tl.where(run_max > -INF, run_max, 0.0) + tl.log(run_sum)  # -inf for no logits
    tl.store(lse_ptr + own, lse, mask=inside)
    if POS:
        valid = target < n_other
        if SELF:
            valid = valid & (target != own + self_offset)  # the positive is a dropped pair: none
        tl.store(pos_ptr + own, tl.where(valid, pos, float("nan")), mask=inside)


@triton.jit
def _grad_kernel(a_ptr, b_ptr, t_ptr, row_lse_ptr, row_w_ptr, col_lse_ptr, col_w_ptr, grad_ptr, dot_grad_ptr,
                 n, m, d, offset, period, self_offset, SELF: tl.constexpr, ROW: tl.constexpr, COL: tl.constexpr,
                 ACC: tl.constexpr,
                 LOGIT_PRECISION: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    """grad_a[rows, chunk] = scale * C b[:, chunk] and (the first chunk) dot_grad = sum_j c_ij a_i . b_j.
    Every chunk of D recomputes the logits of its rows (the whole D): see the module's note."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    kd = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    scale = _scale(t_ptr, ACC)
    target = _target(rows, offset, period)
    if ROW:
        row_lse = tl.load(row_lse_ptr + rows, mask=rows < n, other=0.0)
        row_w = tl.load(row_w_ptr + rows, mask=rows < n, other=0.0)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=ACC)
    dot_grad = tl.zeros([BLOCK_M], dtype=ACC)
    for j0 in range(0, m, BLOCK_N):
        cols = j0 + tl.arange(0, BLOCK_N)
        keep = _kept(rows, cols, n, m, self_offset, SELF, False)
        dots = _pair_tile(a_ptr, b_ptr, rows, cols, n, m, d, False, ACC, LOGIT_PRECISION, BLOCK_M, BLOCK_N,
                          BLOCK_K)
        logit = dots * scale
        hit = tl.where(target[:, None] == cols[None, :], 1.0, 0.0)
        # info_nce.h's coefficient: a term absent is not added (0 * exp may be NaN)
        coef = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
        if ROW:
            coef += row_w[:, None] * (tl.exp(logit - row_lse[:, None]) - hit)
        if COL:
            col_lse = tl.load(col_lse_ptr + cols, mask=cols < m, other=0.0)
            col_w = tl.load(col_w_ptr + cols, mask=cols < m, other=0.0)
            coef += col_w[None, :] * (tl.exp(logit - col_lse[None, :]) - hit)
        coef = tl.where(keep, coef, 0.0)
        dot_grad += tl.sum(coef * dots, axis=1)
        y = tl.load(b_ptr + cols[:, None].to(tl.int64) * d + kd[None, :],
                    mask=(cols[:, None] < m) & (kd[None, :] < d), other=0.0).to(ACC)
        acc += tl.dot(coef, y, input_precision=PRECISION, out_dtype=ACC)
    grad = acc * scale
    tl.store(grad_ptr + rows[:, None].to(tl.int64) * d + kd[None, :], grad.to(grad_ptr.dtype.element_ty),
             mask=(rows[:, None] < n) & (kd[None, :] < d))
    if tl.program_id(1) == 0:
        tl.store(dot_grad_ptr + rows, dot_grad, mask=rows < n)


@triton.jit
def _grad_b_kernel(a_ptr, b_ptr, t_ptr, row_lse_ptr, row_w_ptr, col_lse_ptr, col_w_ptr, grad_ptr, n, m, d, offset,
                   period, self_offset, SELF: tl.constexpr, ROW: tl.constexpr, COL: tl.constexpr, ACC: tl.constexpr,
                   LOGIT_PRECISION: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    """grad_b[cols, chunk] = scale * C^T a[:, chunk]: one program per block of b's rows (the
    columns) walks a's rows in blocks, each logit tile computed exactly as _grad_kernel computes it
    (rows x cols, then used transposed), so that both gradients see the same coefficients."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    kd = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    scale = _scale(t_ptr, ACC)
    if COL:
        col_lse = tl.load(col_lse_ptr + cols, mask=cols < m, other=0.0)
        col_w = tl.load(col_w_ptr + cols, mask=cols < m, other=0.0)
    acc = tl.zeros([BLOCK_N, BLOCK_D], dtype=ACC)
    for i0 in range(0, n, BLOCK_M):
        rows = i0 + tl.arange(0, BLOCK_M)
        keep = _kept(rows, cols, n, m, self_offset, SELF, False)
        logit = _pair_tile(a_ptr, b_ptr, rows, cols, n, m, d, False, ACC, LOGIT_PRECISION, BLOCK_M, BLOCK_N,
                           BLOCK_K) * scale
        hit = tl.where(_target(rows, offset, period)[:, None] == cols[None, :], 1.0, 0.0)
        coef = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
        if ROW:
            row_lse = tl.load(row_lse_ptr + rows, mask=rows < n, other=0.0)
            row_w = tl.load(row_w_ptr + rows, mask=rows < n, other=0.0)
            coef += row_w[:, None] * (tl.exp(logit - row_lse[:, None]) - hit)
        if COL:
            coef += col_w[None, :] * (tl.exp(logit - col_lse[None, :]) - hit)
        coef = tl.where(keep, coef, 0.0)
        x = tl.load(a_ptr + rows[:, None].to(tl.int64) * d + kd[None, :],
                    mask=(rows[:, None] < n) & (kd[None, :] < d), other=0.0).to(ACC)
        acc += tl.dot(tl.trans(coef), x, input_precision=PRECISION, out_dtype=ACC)
    grad = acc * scale
    tl.store(grad_ptr + cols[:, None].to(tl.int64) * d + kd[None, :], grad.to(grad_ptr.dtype.element_ty),
             mask=(cols[:, None] < m) & (kd[None, :] < d))


def _logit_precision(dtype: torch.dtype) -> str:
    # float16/bfloat16 values are exact in TF32: their products lose nothing to it
    return "tf32" if dtype in (torch.float16, torch.bfloat16) else _precision(dtype)


def _lse_sweep(a, b, temperature, lse, pos, offset, period, self_offset, columns, acc_tl):
    n, d = a.shape
    m = b.shape[0]
    own, block_own, block_other = (m, BLOCK_N, BLOCK_M) if columns else (n, BLOCK_M, BLOCK_N)
    if own == 0:
        return
    _lse_kernel[(triton.cdiv(own, block_own),)](
        a, b, temperature, lse, lse if pos is None else pos, n, m, d, offset, period, max(self_offset, 0),
        COLUMNS=columns, SELF=self_offset >= 0,
        POS=pos is not None, ACC=acc_tl, PRECISION=_logit_precision(a.dtype), BLOCK_OWN=block_own,
        BLOCK_OTHER=block_other, BLOCK_K=BLOCK_K, num_warps=NUM_WARPS)


def info_nce_stats(a: torch.Tensor, b: torch.Tensor, temperature: torch.Tensor, pos_offset: int, pos_period: int,
                   self_offset: int, col_stats: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lse, pos_logit, col_lse) of the logits (a b^T) / temperature: per row of a its
    log-sum-exp and its positive's logit (NaN where it has none); per row of b (col_stats) its
    log-sum-exp over a's rows, else empty."""
    n = a.shape[0]
    m = b.shape[0]
    acc_tl, acc_torch = _acc_of(a.dtype)
    lse = torch.empty(n, dtype=acc_torch, device=a.device)
    pos = torch.empty(n, dtype=acc_torch, device=a.device)
    col_lse = torch.empty(m if col_stats else 0, dtype=acc_torch, device=a.device)
    with _device_scope(a):
        _lse_sweep(a, b, temperature, lse, pos, pos_offset % pos_period, pos_period, self_offset, False, acc_tl)
        if col_stats:  # the column sweep: per row of b over the same tiles (no positive needed)
            _lse_sweep(a, b, temperature, col_lse, None, 0, pos_period, self_offset, True, acc_tl)
    return lse, pos, col_lse


def info_nce_grad(a: torch.Tensor, b: torch.Tensor, temperature: torch.Tensor, row_lse: torch.Tensor | None,
                  row_weight: torch.Tensor | None, col_lse: torch.Tensor | None, col_weight: torch.Tensor | None,
                  pos_offset: int, pos_period: int, self_offset: int,
                  need_grad_b: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_a, grad_b, dot_grad): grad_a = C b / temperature in a's dtype, grad_b = C^T a /
    temperature in b's dtype when need_grad_b (else empty), and dot_grad_i = sum_j c_ij (a_i . b_j),
    with the coefficients of the row term (row_lse, row_weight) and the column term (col_lse,
    col_weight), each left out when None."""
    n, d = a.shape
    m = b.shape[0]
    acc_tl, acc_torch = _acc_of(a.dtype)
    grad = torch.empty((n, d), dtype=a.dtype, device=a.device)
    grad_b = torch.empty((m, d) if need_grad_b else (0,), dtype=b.dtype, device=b.device)
    dot_grad = torch.empty(n, dtype=acc_torch, device=a.device)
    if n == 0:
        return grad, grad_b.zero_(), dot_grad
    row, col = row_lse is not None, col_lse is not None
    block_d = min(MAX_BLOCK_D, max(16, triton.next_power_of_2(max(d, 1))))
    stats = (row_lse if row else dot_grad, row_weight if row else dot_grad, col_lse if col else dot_grad,
             col_weight if col else dot_grad)
    common = dict(SELF=self_offset >= 0, ROW=row, COL=col, ACC=acc_tl, LOGIT_PRECISION=_logit_precision(a.dtype),
                  PRECISION=_precision(a.dtype), BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, BLOCK_D=block_d,
                  num_warps=NUM_WARPS)
    d_chunks = max(1, triton.cdiv(d, block_d))
    with _device_scope(a):
        _grad_kernel[(triton.cdiv(n, BLOCK_M), d_chunks)](
            a, b, temperature, *stats, grad, dot_grad, n, m, d, pos_offset % pos_period, pos_period,
            max(self_offset, 0), **common)
        if need_grad_b and m > 0:
            _grad_b_kernel[(triton.cdiv(m, BLOCK_N), d_chunks)](
                a, b, temperature, *stats, grad_b, n, m, d, pos_offset % pos_period, pos_period,
                max(self_offset, 0), **common)
    return grad, grad_b, dot_grad
