"""The all-pairs softmax family (InfoNCE, CLIP's symmetric loss, SimCLR's NT-Xent): custom ops
per backend, autograd, and the entry points that functional.py calls.

Contract (csrc/ops.cpp): info_nce_stats(a, b, temperature, pos_offset, pos_period, self_offset,
col_stats) -> (lse, pos_logit, col_lse) and info_nce_grad(a, b, temperature, row_lse?, row_weight?,
col_lse?, col_weight?, pos_offset, pos_period, self_offset, need_grad_b) -> (grad_a, grad_b,
dot_grad), both tile by tile without the n x m logits (csrc/formulas/info_nce.h). Row i's positive
is column (i + pos_offset) mod pos_period; self_offset >= 0 drops the pairs (i, i + self_offset).

Why a forward and a backward sweep (not gradients written in the forward, as the other
families do): every gradient needs the rows' final log-sum-exp, known only at the end of the
forward sweep, so a second sweep is needed anyway; with it apart, evaluation costs one matrix
product instead of three, and backward takes grad_output as it is - with reduction "none" each
row's grad_output weights coefficients that every key's gradient sums, which no rescaling of
unit-grad_output gradients could give. Per row the forward keeps two statistics (lse, positive
logit); backward recomputes each tile. L2 normalisation (F.normalize's, O(N D)) runs around the
ops, its backward in place over the ops' gradients.

Autograd, create_graph and the torch.func transforms: the shared pattern of autograd.py.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .. import _args, _backend, distributed
from .. import reference as plain_formulas
from .autograd import SweptLossFamily, apply_swept_loss

REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
REDUCTION_NAMES = {v: k for k, v in REDUCTIONS.items()}
# kinds: InfoNCE/CLIP on (query, key); NT-Xent on (z1, z2); rows of a global batch against the
# whole of it (the distributed losses' local part: per-row losses, positives and dropped pairs at
# offsets; config adds pos_offset, pos_period, self_offset)
INFO_NCE, NT_XENT, ROWS_AGAINST_SET = 0, 1, 2


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _fake_stats(a, b, temperature, pos_offset, pos_period, self_offset, col_stats):
    acc = _acc_dtype(a)
    return (a.new_empty(a.shape[0], dtype=acc), a.new_empty(a.shape[0], dtype=acc),
            a.new_empty(b.shape[0] if col_stats else 0, dtype=acc))


def _fake_grad(a, b, temperature, row_lse, row_weight, col_lse, col_weight, pos_offset, pos_period, self_offset,
               need_grad_b):
    grad_b = torch.empty_like(b) if need_grad_b else b.new_empty(0)
    return torch.empty_like(a), grad_b, a.new_empty(a.shape[0], dtype=_acc_dtype(a))


if _backend.cpu_built() and hasattr(torch.ops.fastloss, "info_nce_stats"):
    torch.library.register_fake("fastloss::info_nce_stats")(_fake_stats)
    torch.library.register_fake("fastloss::info_nce_grad")(_fake_grad)


@torch.library.custom_op("fastloss::info_nce_stats_triton", mutates_args=())
def info_nce_stats_triton(a: torch.Tensor, b: torch.Tensor, temperature: torch.Tensor, pos_offset: int,
                          pos_period: int, self_offset: int,
                          col_stats: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Triton kernels behind info_nce_stats."""
    from fastloss.kernels import info_nce as kernel  # imported late: TRITON_INTERPRET is read then

    return kernel.info_nce_stats(a, b, temperature, pos_offset, pos_period, self_offset, col_stats)


@torch.library.custom_op("fastloss::info_nce_grad_triton", mutates_args=())
def info_nce_grad_triton(a: torch.Tensor, b: torch.Tensor, temperature: torch.Tensor, row_lse: torch.Tensor | None,
                         row_weight: torch.Tensor | None, col_lse: torch.Tensor | None,
                         col_weight: torch.Tensor | None, pos_offset: int, pos_period: int, self_offset: int,
                         need_grad_b: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Triton kernels behind info_nce_grad."""
    from fastloss.kernels import info_nce as kernel

    return kernel.info_nce_grad(a, b, temperature, row_lse, row_weight, col_lse, col_weight, pos_offset,
                                pos_period, self_offset, need_grad_b)


info_nce_stats_triton.register_fake(_fake_stats)
info_nce_grad_triton.register_fake(_fake_grad)


def _ops(backend: str):
    if backend == "triton":
        return torch.ops.fastloss.info_nce_stats_triton, torch.ops.fastloss.info_nce_grad_triton
    return torch.ops.fastloss.info_nce_stats, torch.ops.fastloss.info_nce_grad


def _reduce(rows: torch.Tensor, reduction_id: int, dtype: torch.dtype) -> torch.Tensor:
    if reduction_id == REDUCTIONS["none"]:
        return rows.to(dtype)
    total = rows.sum() if reduction_id == REDUCTIONS["sum"] else rows.mean()
    return total.to(dtype)


def _row_weights(grad_output: torch.Tensor, reduction_id: int, rows: int, dtype: torch.dtype) -> torch.Tensor:
    """Each row loss's d loss / d row: grad_output itself for "none", else spread over the rows."""
    g = grad_output.to(dtype)
    if reduction_id == REDUCTIONS["none"]:
        return g.contiguous()
    if reduction_id == REDUCTIONS["mean"]:
        g = g / rows
    return g.expand(rows).contiguous()


def _temperature_grad(dot_grad: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    # l = (a . b) / t, so d loss / d t = -sum_ij c_ij (a . b)_ij / t^2
    t = temperature.to(torch.float64)
    return (-dot_grad.to(torch.float64).sum() / (t * t)).to(temperature.dtype)


# ---- the family: tensors (query, key, temperature) or (z1, z2, temperature); config (kind,
# symmetric, reduction, normalize) ----

NORM_EPS = 1e-12  # F.normalize's


def _unit_rows(x: torch.Tensor, normalize: bool) -> torch.Tensor:
    return F.normalize(x, dim=1, eps=NORM_EPS) if normalize else x


def _unit_rows_backward_(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """F.normalize's backward in place over grad (d loss / d unit rows -> d loss / d x):
    (g - u (u . g)) / max(|x|, eps) with u = x / max(|x|, eps), without the projection where the
    norm was clamped. No temporary of x's size: the row dots by a batched product, the update by
    addcmul_ with a per-row factor."""
    if x.dtype in (torch.float16, torch.bfloat16):  # |x|^2 and x . g would overflow or underflow there
        return grad.copy_(_unit_rows_backward_(grad.float(), x.float()))
    norm = x.norm(dim=1, keepdim=True)
    denom = norm.clamp_min(NORM_EPS)
    x_dot_g = torch.bmm(x.unsqueeze(1), grad.unsqueeze(2)).squeeze(2)  # (n, 1)
    factor = (x_dot_g / denom / denom).masked_fill_(~(norm > NORM_EPS), 0)  # (x.g / d) / d, as torch
    return grad.addcmul_(x, factor, value=-1).div_(denom)


def _nt_xent_rows(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    return torch.cat([_unit_rows(z1, True), _unit_rows(z2, True)])


# The unit rows are not saved: backward recomputes them (O(N D)), so that neither they nor a
# second set of gradients outlives its step (with autograd's F.normalize both would).

def _forward(backend: str, config: tuple, tensors) -> tuple[torch.Tensor, tuple]:
    stats_op, _ = _ops(backend)
    kind, symmetric, reduction_id, normalize = config[:4]
    if kind == NT_XENT:
        z1, z2, temperature = tensors
        z = _nt_xent_rows(z1, z2)
        lse, pos, _ = stats_op(z, z, temperature, z1.shape[0], max(z.shape[0], 1), 0, False)
        return _reduce(lse - pos, reduction_id, z.dtype), (lse,)
    if kind == ROWS_AGAINST_SET:
        rows, ref, temperature = tensors
        pos_offset, pos_period, self_offset = config[4:]
        lse, pos, _ = stats_op(_unit_rows(rows, normalize), _unit_rows(ref, normalize), temperature, pos_offset,
                               pos_period, self_offset, False)
        return _reduce(lse - pos, reduction_id, rows.dtype), (lse,)
    query, key, temperature = tensors
    lse, pos, col_lse = stats_op(_unit_rows(query, normalize), _unit_rows(key, normalize), temperature, 0,
                                 max(query.shape[0], 1), -1, symmetric)
    rows = lse - pos
    if symmetric:
        rows = (rows + (col_lse - pos)) / 2
        return _reduce(rows, reduction_id, query.dtype), (lse, col_lse)
    return _reduce(rows, reduction_id, query.dtype), (lse,)


def _backward(backend: str, config: tuple, tensors, stats, grad_output: torch.Tensor, needs) -> list:
    _, grad_op = _ops(backend)
    kind, symmetric, reduction_id, normalize = config[:4]
    temperature = tensors[-1]
    if kind == ROWS_AGAINST_SET:
        rows, ref = tensors[0], tensors[1]
        (lse,) = stats
        a, b = _unit_rows(rows, normalize), _unit_rows(ref, normalize)
        w = _row_weights(grad_output, reduction_id, rows.shape[0], lse.dtype)
        ga, gb, dot_grad = grad_op(a, b, temperature, lse, w, None, None, *config[4:], needs[1])
        del a, b
        if normalize:
            ga = _unit_rows_backward_(ga, rows) if needs[0] else None
            gb = _unit_rows_backward_(gb, ref) if needs[1] else None
        return [ga if needs[0] else None, gb if needs[1] else None,
                _temperature_grad(dot_grad, temperature) if needs[2] else None]
    if kind == NT_XENT:
        z1, z2, _ = tensors
        b = z1.shape[0]
        z = _nt_xent_rows(z1, z2)
        (lse,) = stats
        # Both directions of every pair in one row-owned sweep: the similarities are symmetric,
        # so row i's gradient takes c_ij + c_ji, the second being column j's term (its lse row j's).
        w = _row_weights(grad_output, reduction_id, 2 * b, lse.dtype)
        grad_z, _, dot_grad = grad_op(z, z, temperature, lse, w, lse, w, b, max(2 * b, 1), 0, False)
        del z
        grads = [_unit_rows_backward_(grad_z[:b], z1) if needs[0] else None,
                 _unit_rows_backward_(grad_z[b:], z2) if needs[1] else None, None]
        if needs[2]:  # dot_grad counts each pair from both ends: the temperature's share is half
            grads[2] = _temperature_grad(dot_grad / 2, temperature)
        return grads
    query, key = tensors[0], tensors[1]
    q, k = _unit_rows(query, normalize), _unit_rows(key, normalize)
    w = _row_weights(grad_output, reduction_id, query.shape[0], stats[0].dtype)
    if symmetric:
        lse, col_lse = stats
        half = w / 2
        gq, gk, dot_grad = grad_op(q, k, temperature, lse, half, col_lse, half, 0, max(query.shape[0], 1), -1,
                                   needs[1])
    else:
        (lse,) = stats
        gq, gk, dot_grad = grad_op(q, k, temperature, lse, w, None, None, 0, max(query.shape[0], 1), -1, needs[1])
    del q, k
    if normalize:
        gq = _unit_rows_backward_(gq, query) if needs[0] else None
        gk = _unit_rows_backward_(gk, key) if needs[1] else None
    return [gq if needs[0] else None, gk if needs[1] else None,
            _temperature_grad(dot_grad, temperature) if needs[2] else None]


def _plain(config: tuple, tensors) -> torch.Tensor:
    """The same loss on the materialised logits: what create_graph and the transforms differentiate."""
    kind, symmetric, reduction_id, normalize = config[:4]
    reduction = REDUCTION_NAMES[reduction_id]
    if kind == ROWS_AGAINST_SET:
        rows, ref, temperature = tensors
        pos_offset, pos_period, self_offset = config[4:]
        losses = plain_formulas.softmax_rows_against_set(rows, ref, temperature, pos_offset, pos_period,
                                                         None if self_offset < 0 else self_offset, normalize)
        return plain_formulas.reduce(losses, reduction)
    if kind == NT_XENT:
        z1, z2, temperature = tensors
        return plain_formulas.nt_xent_loss(z1, z2, temperature, reduction)
    query, key, temperature = tensors
    return plain_formulas.info_nce_loss(query, key, temperature, symmetric, normalize, reduction)


FAMILY = SweptLossFamily("info_nce", _forward, _backward, _plain)


# ---- argument checks and entry points ----

def _check_rows(fn: str, name: str, x) -> None:
    _args.check_tensor(fn, name, x)
    if not x.dtype.is_floating_point:
        raise TypeError(f"fastloss.{fn}: {name} must be a floating-point tensor, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"fastloss.{fn}: {name} must be (rows, D), got shape {tuple(x.shape)}")


def _temperature(fn: str, temperature, like: torch.Tensor) -> torch.Tensor:
    """temperature as a 0-d tensor on like's device, checked: a positive finite float, or a
    floating 0-d (or one-element) tensor; a tensor's value is checked where that costs no device
    sync and no graph break (on the CPU, outside torch.compile)."""
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1 or temperature.dim() > 1:
            raise ValueError(f"fastloss.{fn}: temperature must be a scalar (a float or a 0-d tensor), got a tensor "
                             f"of shape {tuple(temperature.shape)}")
        if not temperature.dtype.is_floating_point:
            raise TypeError(f"fastloss.{fn}: temperature must be floating point, got {temperature.dtype}")
        if temperature.device != like.device:
            raise RuntimeError(f"fastloss.{fn}: temperature must be on the embeddings' device ({like.device}), "
                               f"got {temperature.device}")
        if temperature.device.type == "cpu" and not torch.compiler.is_compiling():
            value = float(temperature.detach().reshape(()))
            if not value > 0:
                raise ValueError(f"fastloss.{fn}: temperature must be > 0, got {value}")
        return temperature.reshape(())
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"fastloss.{fn}: temperature must be a float or a 0-d tensor, got "
                        f"{type(temperature).__name__}")
    if not float(temperature) > 0 or temperature == float("inf"):
        raise ValueError(f"fastloss.{fn}: temperature must be a finite number > 0, got {temperature}")
    # filled on the device (a fill kernel with the value as its argument): torch.tensor(value,
    # device=...) would copy from the host and wait for the stream
    return torch.full((), float(temperature), dtype=torch.float64, device=like.device)


def info_nce_loss(query: torch.Tensor, key: torch.Tensor, temperature, symmetric: bool, normalize: bool,
                  reduction: str, backend: str | None, reference: Callable[[], torch.Tensor],
                  all_gather: bool = False, group=None) -> torch.Tensor:
    fn = "info_nce_loss"
    _check_rows(fn, "query", query)
    _check_rows(fn, "key", key)
    if key.shape[1] != query.shape[1]:
        raise ValueError(f"fastloss.{fn}: key must have query's width D = {query.shape[1]}, got shape "
                         f"{tuple(key.shape)}")
    if key.shape[0] < query.shape[0]:
        raise ValueError(f"fastloss.{fn}: key must have at least as many rows as query (row i's positive is key "
                         f"row i), got query {tuple(query.shape)} and key {tuple(key.shape)}")
    if symmetric and key.shape[0] != query.shape[0]:
        raise ValueError(f"fastloss.{fn}: symmetric=True needs as many keys as queries (M = B: the key -> query "
                         f"direction has one target per key), got query {tuple(query.shape)} and key "
                         f"{tuple(key.shape)}")
    _args.check_same_device(fn, "query", query, key=key)
    reduction_id = _args.check_reduction(fn, reduction, REDUCTIONS)
    temperature = _temperature(fn, temperature, query)
    chosen = _backend.resolve(backend, query.device)
    if all_gather and distributed.active(group):
        dtype = _args.result_dtype(fn, query=query, key=key)
        return _global_info_nce(fn, query.to(dtype), key.to(dtype), temperature, symmetric, normalize, reduction_id,
                                chosen, group)
    if chosen == "torch":
        return reference()
    dtype = _args.result_dtype(fn, query=query, key=key)
    tensors = [query.to(dtype).contiguous(), key.to(dtype).contiguous(), temperature]
    return apply_swept_loss(FAMILY, (INFO_NCE, bool(symmetric), reduction_id, bool(normalize)), chosen, tensors)


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature, reduction: str, backend: str | None,
                 reference: Callable[[], torch.Tensor], all_gather: bool = False, group=None) -> torch.Tensor:
    fn = "nt_xent_loss"
    _check_rows(fn, "z1", z1)
    _check_rows(fn, "z2", z2)
    if z1.shape != z2.shape:
        raise ValueError(f"fastloss.{fn}: z1 and z2 must be two views of one batch, (B, D) each, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    _args.check_same_device(fn, "z1", z1, z2=z2)
    reduction_id = _args.check_reduction(fn, reduction, REDUCTIONS)
    temperature = _temperature(fn, temperature, z1)
    chosen = _backend.resolve(backend, z1.device)
    if all_gather and distributed.active(group):
        dtype = _args.result_dtype(fn, z1=z1, z2=z2)
        return _global_nt_xent(fn, z1.to(dtype), z2.to(dtype), temperature, reduction_id, chosen, group)
    if chosen == "torch":
        return reference()
    dtype = _args.result_dtype(fn, z1=z1, z2=z2)
    tensors = [z1.to(dtype).contiguous(), z2.to(dtype).contiguous(), temperature]
    return apply_swept_loss(FAMILY, (NT_XENT, False, reduction_id, True), chosen, tensors)


# ---- global negatives across processes (fastloss/distributed.py states the contract) ----

def _rows_against(rows, ref, temperature, normalize, pos_offset, pos_period, self_offset, backend):
    """Per-row losses of this rank's rows against the global set (or the plain formula)."""
    if backend == "torch":
        return plain_formulas.softmax_rows_against_set(rows, ref, temperature, pos_offset, pos_period,
                                                       None if self_offset < 0 else self_offset, normalize)
    config = (ROWS_AGAINST_SET, False, REDUCTIONS["none"], bool(normalize), pos_offset, pos_period, self_offset)
    return apply_swept_loss(FAMILY, config, backend, [rows.contiguous(), ref.contiguous(), temperature])


def _global_reduce(rows: torch.Tensor, reduction_id: int, total_rows: int, group) -> torch.Tensor:
    """L_r from this rank's row losses: "mean" over the global rows and "sum", times the world
    size (DDP averages over ranks); "none": the rows themselves."""
    if reduction_id == REDUCTIONS["none"]:
        return rows
    factor = float(distributed.world_size(group))
    if reduction_id == REDUCTIONS["mean"]:
        factor = factor / total_rows if total_rows else float("nan")
    return rows.sum() * factor


def _global_info_nce(fn, query, key, temperature, symmetric, normalize, reduction_id, backend, group):
    """Row i of this rank is row offset + i of the global batch: its target the global key at
    offset + i; the keys are every rank's paired keys (rank order), then every rank's extra ones."""
    b = query.shape[0]
    counts = distributed.row_counts(fn, "query", query, group)
    extra = distributed.row_counts(fn, "key", key[b:], group)
    offset, total = distributed.offset_of(counts, group), sum(counts)
    keys = torch.cat([distributed.gather_rows(key[:b], counts, group), distributed.gather_rows(key[b:], extra, group)])
    period = max(keys.shape[0], 1)
    rows = _rows_against(query, keys, temperature, normalize, offset, period, -1, backend)
    if symmetric:  # the key -> query direction of this rank's keys, against every rank's queries
        queries = distributed.gather_rows(query, counts, group)
        rows = (rows + _rows_against(key, queries, temperature, normalize, offset, max(total, 1), -1, backend)) / 2
    return _global_reduce(rows, reduction_id, total, group)


def _global_nt_xent(fn, z1, z2, temperature, reduction_id, backend, group):
    """The global batch is cat(every rank's z1, every rank's z2); this rank's view-1 row i is global
    row offset + i (its positive B + offset + i), its view-2 row i global row B + offset + i."""
    counts = distributed.row_counts(fn, "z1", z1, group)
    distributed.row_counts(fn, "z2", z2, group)  # the widths agree on every rank
    offset, total = distributed.offset_of(counts, group), sum(counts)
    everything = torch.cat([distributed.gather_rows(z1, counts, group), distributed.gather_rows(z2, counts, group)])
    period = max(2 * total, 1)
    first = _rows_against(z1, everything, temperature, True, total + offset, period, offset, backend)
    second = _rows_against(z2, everything, temperature, True, offset, period, total + offset, backend)
    return _global_reduce(torch.cat([first, second]), reduction_id, 2 * total, group)
