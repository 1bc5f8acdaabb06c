"""Triton implementation of the in-batch contract (see csrc/ops.cpp and csrc/formulas/batch_pair.h):
the all-pairs contrastive loss and the batch-hard triplet loss, tile by tile.

One program per block of BLOCK_M query rows walks the reference rows in blocks of BLOCK_N, in
order: the tile of inner products by tl.dot over D in BLOCK_K steps (any N, M, D: masked), then
the epilogue of csrc/formulas/batch_pair.h, then - when training - the coefficient tiles times
the reference rows by tl.dot, added into the program's own rows of two gradient accumulators
(positive and negative pairs: their AvgNonZero normalisers are known only at the end). With a
separate reference set a column-owned sweep gives the reference gradient. The batch-hard loss
mines in the same sweep; its gradient goes to the chosen positives and negatives through a
segment sum over the anchors sorted by choice (a stable sort): no atomics, the same bits every
run. The O(N) finishing steps (totals, the per-anchor costs) are torch ops on the device: no
host sync.
"""

import torch
import triton
import triton.language as tl

from .pointwise_loss import _acc_of, _device_scope, _scalar, scalar_bits

CONTRASTIVE, HARD_TRIPLET, HARD_SOFT_TRIPLET = 0, 1, 2
MEAN, SUM, AVG_NONZERO = 1, 2, 3
BLOCK_M, BLOCK_N, BLOCK_K = 32, 32, 32
STATS = 5  # per row: positive costs > 0 (sum, count), negative ones (sum, count), every cost
# Globals a kernel reads must be constexpr objects (the GPU compiler rejects plain ones), and equal
# to themselves: every launch compares them with their value at compile time, so a NaN constant
# would fail each launch (NaN is written inline instead).
INF = tl.constexpr(float("inf"))
NO_COLUMN = tl.constexpr(1 << 62)
NORM_EPS = 1e-12  # F.normalize's eps


@triton.jit
def _epsilon(ACC: tl.constexpr):
    if ACC == tl.float64:
        e = tl.full([], 2.220446049250313e-16, tl.float64)
    else:
        e = tl.full([], 1.1920928955078125e-07, tl.float32)
    return e


@triton.jit
def _distances(x_ptr, y_ptr, x_scale_ptr, y_scale_ptr, x_sq_ptr, y_sq_ptr, rows, cols, n_x, n_y, d,
               ACC: tl.constexpr, PRECISION: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_Y: tl.constexpr,
               BLOCK_K: tl.constexpr):
    """The tile of distances between the scaled rows x[rows] * x_scale and y[cols] * y_scale
    (unit rows, or the rows as given): the matrix form with batch_pair.h's resolution rule
    (d^2 below 8 eps (|x|^2 + |y|^2) is 0)."""
    dots = tl.zeros([BLOCK_X, BLOCK_Y], dtype=ACC)
    for k0 in range(0, d, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(x_ptr + rows[:, None].to(tl.int64) * d + k[None, :],
                    mask=(rows[:, None] < n_x) & (k[None, :] < d), other=0.0).to(ACC)
        b = tl.load(y_ptr + cols[:, None].to(tl.int64) * d + k[None, :],
                    mask=(cols[:, None] < n_y) & (k[None, :] < d), other=0.0).to(ACC)
        dots += tl.dot(a, tl.trans(b), input_precision=PRECISION, out_dtype=ACC)
    dots = dots * tl.load(x_scale_ptr + rows, mask=rows < n_x, other=0.0)[:, None]
    dots = dots * tl.load(y_scale_ptr + cols, mask=cols < n_y, other=0.0)[None, :]
    x_sq = tl.load(x_sq_ptr + rows, mask=rows < n_x, other=0.0)
    y_sq = tl.load(y_sq_ptr + cols, mask=cols < n_y, other=0.0)
    norms = x_sq[:, None] + y_sq[None, :]
    d2 = norms - 2.0 * dots
    d2 = tl.where(d2 > 8.0 * _epsilon(ACC) * norms, d2, tl.where(d2 != d2, d2, 0.0))
    return tl.sqrt(d2)


@triton.jit
def _over_distance(dcost, dist):  # cost'(d) / d, 0 at d = 0
    return tl.where(dist > 0, dcost / tl.where(dist > 0, dist, 1.0), 0.0)


@triton.jit
def _relu_keep_nan(v):
    return tl.where(v > 0, v, tl.where(v != v, v, 0.0))


@triton.jit
def _contrastive_tile(x_ptr, y_ptr, x_scale_ptr, y_scale_ptr, x_sq_ptr, y_sq_ptr, x_lab_ptr, y_lab_ptr, rows, cols,
                      n_x, n_y, d, pos_margin, neg_margin, self_offset, SELF: tl.constexpr, ACC: tl.constexpr,
                      PRECISION: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_Y: tl.constexpr, BLOCK_K: tl.constexpr):
    """The contrastive tile: each pair's cost (positive and negative apart) and cost'(d) / d; with
    SELF the pairs (row i, column i + self_offset) are dropped."""
    dist = _distances(x_ptr, y_ptr, x_scale_ptr, y_scale_ptr, x_sq_ptr, y_sq_ptr, rows, cols, n_x, n_y, d, ACC,
                      PRECISION, BLOCK_X, BLOCK_Y, BLOCK_K)
    x_lab = tl.load(x_lab_ptr + rows, mask=rows < n_x, other=0)
    y_lab = tl.load(y_lab_ptr + cols, mask=cols < n_y, other=0)
    inside = (rows[:, None] < n_x) & (cols[None, :] < n_y)
    same = x_lab[:, None] == y_lab[None, :]
    pos = inside & same
    if SELF:
        pos = pos & (cols[None, :] != rows[:, None] + self_offset)
    neg = inside & (x_lab[:, None] != y_lab[None, :])
    gap_p = dist - pos_margin
    gap_n = neg_margin - dist
    cost_p = tl.where(pos, _relu_keep_nan(gap_p), 0.0)
    cost_n = tl.where(neg, _relu_keep_nan(gap_n), 0.0)
    coef_p = tl.where(pos, _over_distance(tl.where(gap_p > 0, 1.0, 0.0), dist), 0.0)
    coef_n = tl.where(neg, _over_distance(tl.where(gap_n > 0, -1.0, 0.0), dist), 0.0)
    return cost_p, cost_n, coef_p, coef_n


@triton.jit
def _accumulate_product(acc_ptr, coef, y_ptr, y_scale_ptr, rows, cols, n_x, n_y, d, ACC: tl.constexpr,
                        PRECISION: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc[rows] += coef @ (y[cols] * y_scale), D in BLOCK_K steps (the program owns these rows)."""
    coef = coef * tl.load(y_scale_ptr + cols, mask=cols < n_y, other=0.0)[None, :]
    for k0 in range(0, d, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        y = tl.load(y_ptr + cols[:, None].to(tl.int64) * d + k[None, :],
                    mask=(cols[:, None] < n_y) & (k[None, :] < d), other=0.0).to(ACC)
        ptrs = acc_ptr + rows[:, None].to(tl.int64) * d + k[None, :]
        mask = (rows[:, None] < n_x) & (k[None, :] < d)
        tl.store(ptrs, tl.load(ptrs, mask=mask, other=0.0) + tl.dot(coef, y, input_precision=PRECISION,
                                                                     out_dtype=ACC), mask=mask)


@triton.jit(do_not_specialize=["pos_margin_bits", "neg_margin_bits"])
def _contrastive_sweep_kernel(q_ptr, r_ptr, q_scale_ptr, r_scale_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr,
                              stats_ptr,
                              acc_pos_ptr, acc_neg_ptr, rowsum_ptr, n, m, d, pos_margin_bits, neg_margin_bits,
                              self_offset, SELF: tl.constexpr, GRAD: tl.constexpr, ACC: tl.constexpr,
                              PRECISION: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    pos_margin = _scalar(pos_margin_bits, ACC)
    neg_margin = _scalar(neg_margin_bits, ACC)
    s_pos = tl.zeros([BLOCK_M], dtype=ACC)
    c_pos = tl.zeros([BLOCK_M], dtype=ACC)
    s_neg = tl.zeros([BLOCK_M], dtype=ACC)
    c_neg = tl.zeros([BLOCK_M], dtype=ACC)
    s_all = tl.zeros([BLOCK_M], dtype=ACC)
    sum_pos = tl.zeros([BLOCK_M], dtype=ACC)
    sum_neg = tl.zeros([BLOCK_M], dtype=ACC)
    for j0 in range(0, m, BLOCK_N):
        cols = j0 + tl.arange(0, BLOCK_N)
        cost_p, cost_n, coef_p, coef_n = _contrastive_tile(
            q_ptr, r_ptr, q_scale_ptr, r_scale_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, rows, cols, n, m, d,
            pos_margin, neg_margin, self_offset, SELF, ACC, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
        s_pos += tl.sum(tl.where(cost_p > 0, cost_p, 0.0), axis=1)
        c_pos += tl.sum(tl.where(cost_p > 0, 1.0, 0.0), axis=1)
        s_neg += tl.sum(tl.where(cost_n > 0, cost_n, 0.0), axis=1)
        c_neg += tl.sum(tl.where(cost_n > 0, 1.0, 0.0), axis=1)
        s_all += tl.sum(cost_p + cost_n, axis=1)
        if GRAD:
            sum_pos += tl.sum(coef_p, axis=1)
            sum_neg += tl.sum(coef_n, axis=1)
            _accumulate_product(acc_pos_ptr, coef_p, r_ptr, r_scale_ptr, rows, cols, n, m, d, ACC, PRECISION,
                                BLOCK_K)
            _accumulate_product(acc_neg_ptr, coef_n, r_ptr, r_scale_ptr, rows, cols, n, m, d, ACC, PRECISION,
                                BLOCK_K)
    inside = rows < n
    base = stats_ptr + rows.to(tl.int64) * 5
    tl.store(base, s_pos, mask=inside)
    tl.store(base + 1, c_pos, mask=inside)
    tl.store(base + 2, s_neg, mask=inside)
    tl.store(base + 3, c_neg, mask=inside)
    tl.store(base + 4, s_all, mask=inside)
    if GRAD:
        tl.store(rowsum_ptr + rows.to(tl.int64) * 2, sum_pos, mask=inside)
        tl.store(rowsum_ptr + rows.to(tl.int64) * 2 + 1, sum_neg, mask=inside)


@triton.jit(do_not_specialize=["pos_margin_bits", "neg_margin_bits"])
def _contrastive_column_kernel(r_ptr, q_ptr, r_scale_ptr, q_scale_ptr, r_sq_ptr, q_sq_ptr, r_lab_ptr, q_lab_ptr,
                               scales_ptr, acc_ptr,
                               rowsum_ptr, m, n, d, pos_margin_bits, neg_margin_bits, self_offset,
                               SELF: tl.constexpr, ACC: tl.constexpr,
                               PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                               BLOCK_K: tl.constexpr):
    """The reference rows' gradient: each program owns a block of reference rows and walks the
    query tiles, with the final scales of the positive and negative parts."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    pos_margin = _scalar(pos_margin_bits, ACC)
    neg_margin = _scalar(neg_margin_bits, ACC)
    scale_pos = tl.load(scales_ptr)
    scale_neg = tl.load(scales_ptr + 1)
    total = tl.zeros([BLOCK_M], dtype=ACC)
    for i0 in range(0, n, BLOCK_N):
        cols = i0 + tl.arange(0, BLOCK_N)
        cost_p, cost_n, coef_p, coef_n = _contrastive_tile(
            r_ptr, q_ptr, r_scale_ptr, q_scale_ptr, r_sq_ptr, q_sq_ptr, r_lab_ptr, q_lab_ptr, rows, cols, m, n, d,
            pos_margin, neg_margin, self_offset, SELF, ACC, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
        coef = scale_pos * coef_p + scale_neg * coef_n
        total += tl.sum(coef, axis=1)
        _accumulate_product(acc_ptr, coef, q_ptr, q_scale_ptr, rows, cols, m, n, d, ACC, PRECISION, BLOCK_K)
    tl.store(rowsum_ptr + rows, total, mask=rows < m)


@triton.jit
def _hard_mining_kernel(x_ptr, x_scale_ptr, x_sq_ptr, lab_ptr, y_ptr, y_scale_ptr, y_sq_ptr, y_lab_ptr, pos_d_ptr,
                        pos_j_ptr, neg_d_ptr, neg_j_ptr, n, m, d, own_offset, ACC: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_K: tl.constexpr):
    """Per anchor row of x: the largest distance to a positive and the smallest to a negative
    among the rows of y (x itself, or a set holding the anchors from row own_offset on: anchor i
    is never paired with its own row i + own_offset), ties to the lowest column (a tile replaces
    the running choice only when strictly harder), a NaN distance the hardest of all (as
    torch.max and torch.min)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    lab = tl.load(lab_ptr + rows, mask=rows < n, other=0)
    best_p = tl.full([BLOCK_M], -INF, ACC)
    best_n = tl.full([BLOCK_M], INF, ACC)
    idx_p = tl.full([BLOCK_M], -1, tl.int64)
    idx_n = tl.full([BLOCK_M], -1, tl.int64)
    for j0 in range(0, m, BLOCK_N):
        cols = j0 + tl.arange(0, BLOCK_N)
        dist = _distances(x_ptr, y_ptr, x_scale_ptr, y_scale_ptr, x_sq_ptr, y_sq_ptr, rows, cols, n, m, d, ACC,
                          PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
        col_lab = tl.load(y_lab_ptr + cols, mask=cols < m, other=0)
        inside = (rows[:, None] < n) & (cols[None, :] < m)
        same = col_lab[None, :] == lab[:, None]
        cand_p = tl.where(inside & same & (cols[None, :] != rows[:, None] + own_offset), dist, -INF)
        cand_n = tl.where(inside & (col_lab[None, :] != lab[:, None]), dist, INF)
        col64 = cols.to(tl.int64)[None, :]
        # the tile's hardest, lowest column first; a NaN first of all
        nan_p = tl.min(tl.where(cand_p != cand_p, col64, NO_COLUMN), axis=1)
        nan_n = tl.min(tl.where(cand_n != cand_n, col64, NO_COLUMN), axis=1)
        top_p = tl.max(tl.where(cand_p != cand_p, -INF, cand_p), axis=1)
        low_n = tl.min(tl.where(cand_n != cand_n, INF, cand_n), axis=1)
        at_p = tl.min(tl.where(cand_p == top_p[:, None], col64, NO_COLUMN), axis=1)
        at_n = tl.min(tl.where(cand_n == low_n[:, None], col64, NO_COLUMN), axis=1)
        keep_p = best_p != best_p  # a NaN already chosen stays
        take_nan_p = (~keep_p) & (nan_p < NO_COLUMN)
        take_p = (~keep_p) & (~take_nan_p) & (top_p > best_p)
        best_p = tl.where(take_nan_p, float("nan"), tl.where(take_p, top_p, best_p))
        idx_p = tl.where(take_nan_p, nan_p, tl.where(take_p, at_p, idx_p))
        keep_n = best_n != best_n
        take_nan_n = (~keep_n) & (nan_n < NO_COLUMN)
        take_n = (~keep_n) & (~take_nan_n) & (low_n < best_n)
        best_n = tl.where(take_nan_n, float("nan"), tl.where(take_n, low_n, best_n))
        idx_n = tl.where(take_nan_n, nan_n, tl.where(take_n, at_n, idx_n))
    inside = rows < n
    tl.store(pos_d_ptr + rows, best_p, mask=inside)
    tl.store(pos_j_ptr + rows, idx_p, mask=inside)
    tl.store(neg_d_ptr + rows, best_n, mask=inside)
    tl.store(neg_j_ptr + rows, idx_n, mask=inside)


@triton.jit
def _segment_sum_kernel(src_ptr, order_ptr, offsets_ptr, out_ptr, d, BLOCK_D: tl.constexpr):
    """out[t] += sum of src[order[k]] for k in [offsets[t], offsets[t + 1]), in that order."""
    t = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    start = tl.load(offsets_ptr + t)
    end = tl.load(offsets_ptr + t + 1)
    acc = tl.load(out_ptr + t * d + k, mask=k < d, other=0.0)
    for s in range(start, end):
        a = tl.load(order_ptr + s)
        acc += tl.load(src_ptr + a * d + k, mask=k < d, other=0.0)
    tl.store(out_ptr + t * d + k, acc, mask=k < d)


def _precision(dtype: torch.dtype) -> str:
    # TF32 only where torch's own float32 matrix products may use it
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _segment_sum(out: torch.Tensor, src: torch.Tensor, target: torch.Tensor) -> None:
    """out[t] += the rows of src whose target is t, in row order: a stable sort, no atomics."""
    n, d = src.shape
    order = torch.argsort(target, stable=True)
    counts = torch.bincount(target, minlength=out.shape[0])
    offsets = torch.zeros(out.shape[0] + 1, dtype=torch.int64, device=src.device)
    offsets[1:] = torch.cumsum(counts, 0)
    block = min(256, triton.next_power_of_2(max(d, 1)))
    _segment_sum_kernel[(out.shape[0], triton.cdiv(d, block))](src, order, offsets, out, d, BLOCK_D=block)


def _row_scales(x, normalize, acc_torch):
    """Per row: 1 / max(|x_i|, 1e-12) for unit rows (F.normalize), else 1; and the squared norm
    of the scaled row."""
    sq = x.to(acc_torch).square().sum(1)
    if not normalize:
        return torch.ones_like(sq), sq
    scale = 1.0 / sq.sqrt().clamp_min(NORM_EPS)
    return scale, sq * scale * scale


def _unit_row_backward(g, x, scale, normalize):
    """d L / d x from g = d L / d(x scale): F.normalize's backward where normalising."""
    if not normalize:
        return g
    u = x * scale[:, None]
    norm = x.square().sum(1).sqrt()
    along = torch.where(norm > NORM_EPS, (u * g).sum(1), 0.0)[:, None]
    return (g - u * along) * scale[:, None]


def _contrastive(q, r, q_labels, r_labels, reduction, pos_margin, neg_margin, normalize, need_q, need_r,
                 self_offset):
    self_ref = r is None
    # the pairs (i, i + dropped) are left out: the batch's own (self), or the queries' own rows in
    # a reference set that holds them from self_offset on
    dropped = 0 if self_ref else (self_offset if self_offset >= 0 else None)
    ref, ref_labels = (q, q_labels) if self_ref else (r, r_labels)
    n, d = q.shape
    m = ref.shape[0]
    acc_tl, acc_torch = _acc_of(q.dtype)
    q_scale, q_sq = _row_scales(q, normalize, acc_torch)
    r_scale, r_sq = (q_scale, q_sq) if self_ref else _row_scales(ref, normalize, acc_torch)
    stats = torch.empty((n, STATS), dtype=acc_torch, device=q.device)
    acc_pos = torch.zeros((n, d), dtype=acc_torch, device=q.device) if need_q else stats
    acc_neg = torch.zeros((n, d), dtype=acc_torch, device=q.device) if need_q else stats
    rowsums = torch.empty((n, 2), dtype=acc_torch, device=q.device) if need_q else stats
    margins = (scalar_bits(pos_margin, acc_torch), scalar_bits(neg_margin, acc_torch))
    precision = _precision(q.dtype)
    if n > 0 and m > 0:
        _contrastive_sweep_kernel[(triton.cdiv(n, BLOCK_M),)](
            q, ref, q_scale, r_scale, q_sq, r_sq, q_labels, ref_labels, stats, acc_pos, acc_neg, rowsums, n, m, d,
            *margins, dropped or 0,
            SELF=dropped is not None, GRAD=need_q, ACC=acc_tl, PRECISION=precision, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
            BLOCK_K=BLOCK_K)
    else:
        stats.zero_()
        rowsums.zero_()
    sums = stats.sum(0).double()
    own = 0 if dropped is None else max(0, min(n, m - dropped))  # one per query whose own row is there
    pairs = float(n * m - own)
    if reduction == MEAN:
        value = sums[4] / max(pairs, 1.0)
        scales = torch.full((2,), 1.0 / pairs if pairs > 0 else 0.0, dtype=torch.float64, device=q.device)
    elif reduction == SUM:
        value = sums[4]
        scales = torch.ones(2, dtype=torch.float64, device=q.device)
    else:  # AvgNonZero
        counts = torch.stack((sums[1], sums[3]))
        scales = torch.where(counts > 0, 1.0 / counts.clamp_min(1.0), 0.0)
        value = sums[0] * scales[0] + sums[2] * scales[1]
    loss = value.to(q.dtype, copy=True)  # a fresh 0-d tensor, not a view (the op's output)
    grad_q = q.new_empty(0)
    grad_r = q.new_empty(0)
    sc = scales.to(acc_torch)
    if need_q:
        x = q.to(acc_torch)
        u = x * q_scale[:, None]
        g = sc[0] * (u * rowsums[:, :1] - acc_pos) + sc[1] * (u * rowsums[:, 1:] - acc_neg)
        grad_q = _unit_row_backward(g * 2.0 if self_ref else g, x, q_scale, normalize).to(q.dtype)
    if need_r and not self_ref:
        acc = torch.zeros((m, d), dtype=acc_torch, device=q.device)
        total = torch.zeros(m, dtype=acc_torch, device=q.device)
        if n > 0 and m > 0:
            _contrastive_column_kernel[(triton.cdiv(m, BLOCK_M),)](
                ref, q, r_scale, q_scale, r_sq, q_sq, ref_labels, q_labels, sc, acc, total, m, n, d, *margins,
                -(dropped or 0), SELF=dropped is not None, ACC=acc_tl, PRECISION=precision, BLOCK_M=BLOCK_M,
                BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
        y = ref.to(acc_torch)
        grad_r = _unit_row_backward(y * r_scale[:, None] * total[:, None] - acc, y, r_scale, normalize).to(q.dtype)
    return loss, grad_q, grad_r, sums


def _hard_triplet(x, labels, reduction, margin, soft, normalize, need, y=None, y_labels=None, own_offset=0):
    """The batch-hard loss of the anchors x against the candidates y (x itself when None, else a
    set holding the anchors from row own_offset on): (loss, grad_x, grad_y, stats)."""
    self_ref = y is None
    n, d = x.shape
    acc_tl, acc_torch = _acc_of(x.dtype)
    scale, sq = _row_scales(x, normalize, acc_torch)
    y, y_labels, own_offset = (x, labels, 0) if self_ref else (y, y_labels, own_offset)
    y_scale, y_sq = (scale, sq) if self_ref else _row_scales(y, normalize, acc_torch)
    pos_d = torch.full((n,), float("-inf"), dtype=acc_torch, device=x.device)
    neg_d = torch.full((n,), float("inf"), dtype=acc_torch, device=x.device)
    pos_j = torch.full((n,), -1, dtype=torch.int64, device=x.device)
    neg_j = torch.full((n,), -1, dtype=torch.int64, device=x.device)
    if n > 0:
        _hard_mining_kernel[(triton.cdiv(n, BLOCK_M),)](
            x, scale, sq, labels, y, y_scale, y_sq, y_labels, pos_d, pos_j, neg_d, neg_j, n, y.shape[0], d,
            own_offset, ACC=acc_tl, PRECISION=_precision(x.dtype), BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
    kept = (pos_j >= 0) & (neg_j >= 0)
    # batch_pair.h's hard_triplet, per anchor
    if soft:
        v = pos_d - neg_d
        e = torch.exp(-v.abs())
        cost = torch.where(v > 0, v, 0.0) + torch.log1p(e)
        dcost = torch.where(v >= 0, torch.ones_like(e), e) / (1.0 + e)
    else:
        v = pos_d - neg_d + margin
        cost = torch.where(v > 0, v, torch.where(v != v, v, 0.0))
        dcost = (v > 0).to(acc_torch)  # (a where of two Python numbers would be float32)
    cost = torch.where(kept, cost, 0.0)
    dcost = torch.where(kept, dcost, 0.0)
    cost64 = cost.double()
    sums = torch.stack((cost64.sum(), kept.sum().double(), torch.where(cost > 0, cost64, 0.0).sum(),
                        (cost > 0).sum().double(), cost64.sum()))
    if reduction == AVG_NONZERO:
        nonzero = cost > 0
        count = nonzero.sum().double()
        value = torch.where(nonzero, cost64, 0.0).sum() / count.clamp_min(1.0)
        weight = torch.where(nonzero, dcost / count.clamp_min(1.0).to(acc_torch), 0.0)
    elif reduction == MEAN:
        count = kept.sum().double()
        value = cost64.sum() / count.clamp_min(1.0)
        weight = dcost / count.clamp_min(1.0).to(acc_torch)
    else:
        value = cost64.sum()
        weight = dcost
    loss = value.to(x.dtype, copy=True)
    if not need:
        return loss, x.new_empty(0), x.new_empty(0), sums
    xa = x.to(acc_torch) * scale[:, None]  # the rows the distances are of
    ya = xa if self_ref else y.to(acc_torch) * y_scale[:, None]
    p, q = pos_j.clamp_min(0), neg_j.clamp_min(0)
    cp = torch.where(pos_d > 0, weight / torch.where(pos_d > 0, pos_d, 1.0), 0.0)[:, None]
    cn = torch.where(neg_d > 0, weight / torch.where(neg_d > 0, neg_d, 1.0), 0.0)[:, None]
    to_p, to_n = xa - ya[p], xa - ya[q]
    grad = cp * to_p - cn * to_n
    grad_y = grad if self_ref else torch.zeros_like(ya)
    _segment_sum(grad_y, (-cp * to_p).contiguous(), p)
    _segment_sum(grad_y, (cn * to_n).contiguous(), q)
    grad_x = _unit_row_backward(grad, x.to(acc_torch), scale, normalize).to(x.dtype)
    if self_ref:
        return loss, grad_x, x.new_empty(0), sums
    return loss, grad_x, _unit_row_backward(grad_y, y.to(acc_torch), y_scale, normalize).to(y.dtype), sums


def batch_pair_loss(q, r, q_labels, r_labels, loss, reduction, margin_a, margin_b, normalize, need_grad_q,
                    need_grad_r, self_offset=-1):
    """(loss, grad_q, grad_r, stats) of the in-batch loss `loss` on rows q (and r) of one float
    dtype (csrc/ops.cpp's contract)."""
    with _device_scope(q):
        if loss == CONTRASTIVE:
            return _contrastive(q, r, q_labels, r_labels, reduction, margin_a, margin_b, normalize, need_grad_q,
                                need_grad_r, self_offset)
        return _hard_triplet(q, q_labels, reduction, margin_a, loss == HARD_SOFT_TRIPLET, normalize,
                             need_grad_q or need_grad_r, r, r_labels, max(self_offset, 0))
