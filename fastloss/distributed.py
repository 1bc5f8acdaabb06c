"""Global negatives across processes: the in-batch losses of a batch split over the ranks of a
torch.distributed process group, as if computed on the whole batch in one process.

The kernels stay single-device: each rank gathers the embeddings of every rank (an all-gather
whose backward sums the gradients of all ranks into the rows each rank owns) and computes the
terms whose query/anchor row is its own, against the global batch; the normalisers that span the
global batch are all-reduced (without grad). This module holds the collectives; the losses call
it when ``all_gather=True``.

The contract, for L the single-process loss on the concatenated batch (rank order): each rank
returns L_r with mean_r L_r = L ("mean" and "sum"; "none" returns the rank's own rows of L's
vector), and the gradients of L_r averaged over the ranks - what DistributedDataParallel does -
are the gradients of L, for every embedding row and for a learnable temperature. To log L, average
the detached L_r over the ranks: ``dist.all_reduce(loss.detach()) / world_size``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def active(group=None) -> bool:
    """Whether a process group with more than one rank is there to gather from."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def world_size(group=None) -> int:
    return dist.get_world_size(group)


def _comm_dtype(dtype: torch.dtype, group) -> torch.dtype:
    # gloo reduces no half types: they travel as float32 (exactly) and come back
    if dtype in (torch.float16, torch.bfloat16) and dist.get_backend(group) == "gloo":
        return torch.float32
    return dtype


_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def row_counts(fn: str, name: str, x: torch.Tensor, group=None) -> list[int]:
    """Every rank's number of rows of x (ranks may hold different batch sizes); checks that the
    widths and dtypes agree, on every rank, so that a mismatch is an error everywhere, not a hang."""
    code = _DTYPES.index(x.dtype) if x.dtype in _DTYPES else -1
    shape = torch.tensor([x.shape[0], x.shape[1] if x.dim() > 1 else -1, code], dtype=torch.int64, device=x.device)
    parts = [torch.empty_like(shape) for _ in range(world_size(group))]
    dist.all_gather(parts, shape, group=group)
    counts, widths, codes = [int(p[0]) for p in parts], [int(p[1]) for p in parts], [int(p[2]) for p in parts]
    last = len(widths) - 1
    if len(set(widths)) != 1:
        raise ValueError(f"fastloss.{fn}: all_gather=True needs {name} of the same width on every rank, got widths "
                         f"{widths} on ranks 0..{last}")
    if len(set(codes)) != 1:
        names = [str(_DTYPES[c]).replace("torch.", "") if c >= 0 else "other" for c in codes]
        raise ValueError(f"fastloss.{fn}: all_gather=True needs {name} of one dtype on every rank, got {names} on "
                         f"ranks 0..{last}")
    return counts


class _GatherRows(torch.autograd.Function):
    """cat over the ranks of their x (counts[r] rows each); backward: the sum of every rank's
    gradient for this rank's rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, counts: list[int], rank: int, group):
        ctx.counts, ctx.rank, ctx.group = counts, rank, group
        comm = _comm_dtype(x.dtype, group)
        padded = x.new_zeros((max(counts),) + tuple(x.shape[1:]), dtype=comm)
        padded[:x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded, group=group)
        return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        comm = _comm_dtype(grad.dtype, ctx.group)
        total = grad.to(comm, copy=True).contiguous()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.counts[:ctx.rank])
        return total[start:start + ctx.counts[ctx.rank]].to(grad.dtype), None, None, None


def gather_rows(x: torch.Tensor, counts: list[int], group=None) -> torch.Tensor:
    """The rows of every rank, in rank order, differentiable (see _GatherRows)."""
    return _GatherRows.apply(x, counts, dist.get_rank(group), group)


def gather_labels(labels: torch.Tensor, counts: list[int], group=None) -> torch.Tensor:
    """The labels of every rank, in rank order (no gradient)."""
    padded = labels.new_zeros(max(counts))
    padded[:labels.shape[0]] = labels
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([p[:c] for p, c in zip(parts, counts)])


def all_reduce_sum(values: torch.Tensor, group=None) -> torch.Tensor:
    """The sum over the ranks of a small tensor of statistics (no gradient)."""
    total = values.detach().to(torch.float64, copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    return total


def offset_of(counts: list[int], group=None) -> int:
    """Where this rank's rows start in the global batch."""
    return sum(counts[:dist.get_rank(group)])
