"""Triton implementation of the row-loss contract (see csrc/ops.cpp and csrc/formulas/row.h):
contrastive (euclidean, manhattan, cosine), triplet margin (p = 2, 1 or any) and cosine
embedding losses over rows of D values.

One program per row: pass 1 sums over D in blocks, the row's formula gives the loss and the
gradient coefficients, pass 2 writes the gradients. Row losses go to one partial each, added
by one program in a fixed order: the same bits every run.
"""

import torch
import triton
import triton.language as tl

from .pointwise_loss import FINISH_BLOCK, _acc_of, _device_scope, _finish_kernel, _scalar, _sign, scalar_bits

(CONTRASTIVE_EUCLIDEAN, CONTRASTIVE_MANHATTAN, CONTRASTIVE_COSINE, TRIPLET_L2, TRIPLET_L1,
 TRIPLET_LP, COSINE_EMBEDDING) = range(7)
MAX_BLOCK_D = 2048


@triton.jit
def _power(v, p, NORM: tl.constexpr):  # |v|^p for norm order 2, 1 or p
    if NORM == 2:
        r = v * v
    elif NORM == 1:
        r = tl.abs(v)
    else:
        r = tl.exp(p * tl.log(tl.abs(v)))
    return r


@triton.jit
def _root(s, p, NORM: tl.constexpr):
    if NORM == 2:
        r = tl.sqrt(s)
    elif NORM == 1:
        r = s
    else:
        r = tl.exp(tl.log(s) / p)  # 0 for s = 0, NaN for NaN
    return r


@triton.jit
def _clamp_min0(x):  # torch.clamp_min(x, 0) and relu: NaN stays NaN
    return tl.where(x < 0, 0.0, x)


@triton.jit
def _over_norm(g, d):  # torch's norm backward g / d: 0 at d = 0, NaN for NaN d (even at g = 0)
    return tl.where(d == 0, 0.0, g / tl.where(d == 0, 1.0, d))


@triton.jit
def _scale(g, d, p, NORM: tl.constexpr):  # the coefficient of _direction in d norm / dv
    if NORM == 2:
        r = _over_norm(g, d)
    elif NORM == 1:
        r = g
    else:
        powered = tl.exp((p - 1.0) * tl.log(d))
        r = tl.where(p < 1.0, g * tl.exp((1.0 - p) * tl.log(d)),
                     tl.where(d == 0, 0.0, g / tl.where(d == 0, 1.0, powered)))
    return r


@triton.jit
def _direction(v, p, NORM: tl.constexpr):  # torch's branches: p < 1, 1 < p < 2, p > 2
    if NORM == 2:
        r = v
    elif NORM == 1:
        r = _sign(v)
    else:
        av = tl.abs(v)
        below_one = _sign(v) * tl.where(v == 0, 0.0, tl.exp((p - 1.0) * tl.log(av)))
        below_two = _sign(v) * tl.exp((p - 1.0) * tl.log(av))
        above_two = v * tl.exp((p - 2.0) * tl.log(av))
        r = tl.where(p < 1.0, below_one, tl.where(p < 2.0, below_two, above_two))
    return r


@triton.jit
def _contrastive(d, y, margin):  # as csrc/formulas/row.h: torch's clamp_min, NaN included
    gap = margin - d
    hinge = _clamp_min0(gap)
    return 0.5 * (y * d * d + (1.0 - y) * (hinge * hinge)), y * d - tl.where(gap > 0, (1.0 - y) * hinge, 0.0)


@triton.jit(do_not_specialize=["margin_bits", "eps_bits", "p_bits", "scale_bits"])
def _row_loss_kernel(a_ptr, b_ptr, c_ptr, label_ptr, loss_ptr, ga_ptr, gb_ptr, gc_ptr, partial_ptr,
                     d, margin_bits, eps_bits, p_bits, scale_bits,
                     LOSS: tl.constexpr, NORM: tl.constexpr, SWAP: tl.constexpr, HAS_LABEL: tl.constexpr,
                     WRITE_LOSS: tl.constexpr, GA: tl.constexpr, GB: tl.constexpr, GC: tl.constexpr,
                     ANY_GRAD: tl.constexpr,
                     ACC: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = row * d
    margin = _scalar(margin_bits, ACC)
    eps = _scalar(eps_bits, ACC)
    p = _scalar(p_bits, ACC)
    s0 = tl.zeros([BLOCK], dtype=ACC)
    s1 = tl.zeros([BLOCK], dtype=ACC)
    s2 = tl.zeros([BLOCK], dtype=ACC)
    for start in range(0, d, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        inside = offs < d
        a = tl.load(a_ptr + base + offs, mask=inside, other=0.0).to(ACC)
        b = tl.load(b_ptr + base + offs, mask=inside, other=0.0).to(ACC)
        if LOSS == 0:
            v = a - b + eps
            s0 += tl.where(inside, v * v, 0.0)
        elif LOSS == 1:
            s0 += tl.where(inside, tl.abs(a - b + eps), 0.0)
        elif LOSS == 2 or LOSS == 6:
            s0 += a * b
            s1 += a * a
            s2 += b * b
        else:
            c = tl.load(c_ptr + base + offs, mask=inside, other=0.0).to(ACC)
            s0 += tl.where(inside, _power(a - b + eps, p, NORM), 0.0)
            s1 += tl.where(inside, _power(a - c + eps, p, NORM), 0.0)
            if SWAP:
                s2 += tl.where(inside, _power(b - c + eps, p, NORM), 0.0)
    t0 = tl.sum(s0, axis=0)
    t1 = tl.sum(s1, axis=0)
    t2 = tl.sum(s2, axis=0)
    y = tl.zeros([], dtype=ACC)
    if HAS_LABEL:
        y = tl.load(label_ptr + row).to(ACC)
    k0 = tl.zeros([], dtype=ACC)
    k1 = tl.zeros([], dtype=ACC)
    k2 = tl.zeros([], dtype=ACC)
    if LOSS == 0:
        dist = tl.sqrt(t0)
        loss, dl = _contrastive(dist, y, margin)
        k0 = _over_norm(dl, dist)
    elif LOSS == 1:
        loss, dl = _contrastive(t0, y, margin)
        k0 = dl
    elif LOSS == 2:  # 1 - cosine_similarity(eps=1e-8), torch's clamped norms
        na = tl.sqrt(t1)
        nb = tl.sqrt(t2)
        tiny = tl.full([], 1e-8, ACC)  # cosine_similarity's eps, exact in float64 too
        ca = tl.maximum(na, tiny)
        cb = tl.maximum(nb, tiny)
        inv = 1.0 / (ca * cb)
        cos = t0 * inv
        loss, dl = _contrastive(1.0 - cos, y, margin)
        k0 = -dl * inv
        k1 = dl * tl.where(na > 0, cos / (ca * tl.where(na > 0, na, 1.0)), 0.0)
        k2 = dl * tl.where(nb > 0, cos / (cb * tl.where(nb > 0, nb, 1.0)), 0.0)
    elif LOSS == 6:  # cosine embedding
        tiny = tl.cast(9.999999960041972e-13, ACC)  # torch's EPSILON, the float constant 1e-12f
        m1 = t1 + tiny
        m2 = t2 + tiny
        denom = tl.sqrt(m1 * m2)
        cos = t0 / denom
        above = cos - margin
        loss = tl.where(y == 1.0, 1.0 - cos, tl.where(y == -1.0, _clamp_min0(above), 0.0))
        dcos = tl.where(y == 1.0, -1.0, tl.where((y == -1.0) & (above > 0), 1.0, 0.0))
        k0 = dcos / denom
        k1 = -dcos * cos / m1
        k2 = -dcos * cos / m2
    else:  # triplet, as csrc/formulas/row.h: torch's minimum, clamp_min and norm gradients
        d_ap = _root(t0, p, NORM)
        d_an = _root(t1, p, NORM)
        d_neg = d_an
        w_an = tl.full([], 1.0, ACC)
        w_pn = tl.zeros([], dtype=ACC)
        d_pn = tl.zeros([], dtype=ACC)
        if SWAP:
            d_pn = _root(t2, p, NORM)
            d_neg = tl.where((d_pn < d_an) | (d_pn != d_pn), d_pn, d_an)
            share = tl.where(d_an == d_pn, 0.5, 1.0)
            w_an = tl.where(d_an > d_pn, 0.0, share)
            w_pn = tl.where(d_an < d_pn, 0.0, share)
        hinge = margin + d_ap - d_neg
        g = tl.where(hinge > 0, 1.0, 0.0)  # no gradient at the boundary (torch 2.14) nor for NaN
        loss = _clamp_min0(hinge)
        k0 = _scale(g, d_ap, p, NORM)
        k1 = _scale(-g * w_an, d_an, p, NORM)
        if SWAP:
            k2 = _scale(-g * w_pn, d_pn, p, NORM)
    if WRITE_LOSS:
        tl.store(loss_ptr + row, loss.to(loss_ptr.dtype.element_ty))
    else:
        tl.store(partial_ptr + row, loss)
    if ANY_GRAD:  # (GA or GB or GC: Triton before 3.4 compiles no chained boolean of constexprs)
        grad_scale = _scalar(scale_bits, ACC)
        k0 = k0 * grad_scale
        k1 = k1 * grad_scale
        k2 = k2 * grad_scale
        for start in range(0, d, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            inside = offs < d
            a = tl.load(a_ptr + base + offs, mask=inside, other=0.0).to(ACC)
            b = tl.load(b_ptr + base + offs, mask=inside, other=0.0).to(ACC)
            if LOSS == 0:
                ga = k0 * (a - b + eps)
                gb = -ga
                gc = ga * 0.0
            elif LOSS == 1:
                ga = k0 * _sign(a - b + eps)
                gb = -ga
                gc = ga * 0.0
            elif LOSS == 2 or LOSS == 6:
                ga = k0 * b + k1 * a
                gb = k0 * a + k2 * b
                gc = ga * 0.0
            else:
                c = tl.load(c_ptr + base + offs, mask=inside, other=0.0).to(ACC)
                g_ap = k0 * _direction(a - b + eps, p, NORM)
                g_an = k1 * _direction(a - c + eps, p, NORM)
                g_pn = tl.zeros([BLOCK], dtype=ACC)
                if SWAP:
                    g_pn = k2 * _direction(b - c + eps, p, NORM)
                ga = g_ap + g_an
                gb = g_pn - g_ap
                gc = -g_an - g_pn
            if GA:
                tl.store(ga_ptr + base + offs, ga.to(ga_ptr.dtype.element_ty), mask=inside)
            if GB:
                tl.store(gb_ptr + base + offs, gb.to(gb_ptr.dtype.element_ty), mask=inside)
            if GC:
                tl.store(gc_ptr + base + offs, gc.to(gc_ptr.dtype.element_ty), mask=inside)


def row_loss(a, b, c, label, loss, reduction, margin, eps, p, swap, need_grad_a, need_grad_b, need_grad_c):
    """(loss, grad_a, grad_b, grad_c) for rows a, b (and c) (N, D) of one float dtype."""
    n, d = a.shape
    loss_out = a.new_empty(n) if reduction == 0 else a.new_empty(())
    grads = [torch.empty_like(a) if need else a.new_empty(0)
             for need in (need_grad_a, need_grad_b, need_grad_c and c is not None)]
    acc_tl, acc_torch = _acc_of(a.dtype)
    norm = {TRIPLET_L2: 2, TRIPLET_L1: 1, TRIPLET_LP: 0}.get(loss, 2)
    with _device_scope(a):
        if n == 0:
            if reduction != 0:
                loss_out.fill_(0.0 if reduction == 2 else float("nan"))
            return (loss_out, *grads)
        partials = torch.empty(n, dtype=acc_torch, device=a.device)
        block = min(MAX_BLOCK_D, triton.next_power_of_2(max(d, 1)))
        grad_c = need_grad_c and c is not None
        _row_loss_kernel[(n,)](
            a, b, c if c is not None else a, label if label is not None else a, loss_out, *grads, partials,
            d, *(scalar_bits(v, acc_torch) for v in (margin, eps, p, 1.0 / n if reduction == 1 else 1.0)),
            LOSS=loss, NORM=norm, SWAP=bool(swap), HAS_LABEL=label is not None, WRITE_LOSS=reduction == 0,
            GA=need_grad_a, GB=need_grad_b, GC=grad_c, ANY_GRAD=need_grad_a or need_grad_b or grad_c,
            ACC=acc_tl, BLOCK=block)
        if reduction != 0:
            _finish_kernel[(1,)](partials, n, loss_out, partials, partials, n, ACC=acc_tl, HAS_OUT=True,
                                 HAS_INVERSE=False, DIVIDE=reduction == 1, HAS_DIVISOR=False, BLOCK=FINISH_BLOCK)
    return (loss_out, *grads)
