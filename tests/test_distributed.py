"""Global negatives across processes (fastloss/distributed.py): 2 and 3 CPU processes on gloo, each
holding an uneven slice of a global batch, against the single-process loss on the concatenated
batch (torch's F.cross_entropy on the materialised float64 logits): the mean over the ranks of
their losses, the DDP-averaged gradients of every row and of a learnable temperature, and a real
DistributedDataParallel model trained three steps. Every run has a timeout, so a hang fails."""

import io
import os
import socket
import traceback

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

import fastloss

TIMEOUT_S = 240
BACKENDS = ["cpu", "torch"] + (["triton"] if os.environ.get("TRITON_INTERPRET") == "1" else [])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, job, args, queue):
    import torch.distributed as dist

    try:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        torch.set_num_threads(1)
        result = io.BytesIO()
        torch.save(job(rank, world, *args), result)  # bytes: tensors in shared memory die with the process
        queue.put((rank, result.getvalue()))
        dist.barrier()  # every rank done before any tears its connections down (gloo aborts otherwise)
        dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 (reported to the parent, which fails the test)
        queue.put((rank, RuntimeError(traceback.format_exc())))


def run_ranks(world, job, *args):
    """job(rank, world, *args) on `world` spawned processes; the results in rank order."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, job, args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results = {}
    try:
        for _ in range(world):
            rank, value = queue.get(timeout=TIMEOUT_S)
            if isinstance(value, Exception):
                raise AssertionError(f"rank {rank} failed:\n{value}")
            results[rank] = torch.load(io.BytesIO(value))
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    return [results[r] for r in range(world)]


# ---- the global batch and its single-process oracle ----

def global_batch(seed, sizes, extras, d=6):
    g = torch.Generator().manual_seed(seed)
    b = sum(sizes)
    q = torch.randn(b, d, generator=g, dtype=torch.float64) * 0.7
    k = torch.randn(b + sum(extras), d, generator=g, dtype=torch.float64) * 0.7
    return q, k


def slices(sizes):
    starts = [sum(sizes[:r]) for r in range(len(sizes))]
    return [slice(s, s + n) for s, n in zip(starts, sizes)]


def oracle(kind, q, k, t, reduction, normalize):
    """The single-process loss on the global batch, in float64 from torch's own cross-entropy."""
    b = q.shape[0]
    if kind == "nt_xent":
        z = F.normalize(torch.cat([q, k[:b]]), dim=1)
        logits = (z @ z.T / t).masked_fill(torch.eye(2 * b, dtype=torch.bool), float("-inf"))
        target = (torch.arange(2 * b) + b) % (2 * b)
        return F.cross_entropy(logits, target, reduction=reduction)
    if normalize:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = q @ k.T / t
    loss = F.cross_entropy(logits, torch.arange(b), reduction="none")
    if kind == "clip":
        loss = (loss + F.cross_entropy(logits.T[:b], torch.arange(b), reduction="none")) / 2
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


CASES = [(kind, reduction, normalize, backend)
         for kind in ("info_nce", "clip", "nt_xent")
         for reduction in ("mean", "sum", "none")
         for normalize in (False, True)
         for backend in BACKENDS
         if not (kind == "nt_xent" and not normalize)]


def _local_losses(rank, world, sizes, extras, seed):
    """Every case on this rank: its loss and the gradients of its rows and temperature."""
    out = []
    for kind, reduction, normalize, backend in CASES:
        q, k = global_batch(seed, sizes, extras)
        b = q.shape[0]
        mine = slices(sizes)[rank]
        kq = k[:b][mine]
        kx = k[b:][slices(extras)[rank]] if kind == "info_nce" else k[:0]
        ql = q[mine].float().requires_grad_()
        kl = torch.cat([kq, kx]).float().requires_grad_()
        # a learned temperature, except for "sum": a plain number there (no temperature gradient)
        t = torch.tensor(0.3, requires_grad=True) if reduction != "sum" else 0.3
        if kind == "nt_xent":
            loss = fastloss.nt_xent_loss(ql, kl, t, reduction=reduction, backend=backend, all_gather=True)
        else:
            loss = fastloss.info_nce_loss(ql, kl, t, symmetric=kind == "clip", normalize=normalize,
                                          reduction=reduction, backend=backend, all_gather=True)
        g = torch.linspace(0.5, 1.5, loss.numel()).reshape(loss.shape) if reduction == "none" else torch.tensor(1.0)
        loss.backward(g)
        out.append((loss.detach(), ql.grad, kl.grad, t.grad if reduction != "sum" else None))
    return out


@pytest.mark.parametrize("sizes,extras", [([5, 2], [3, 0]), ([4, 1, 6], [0, 2, 1])], ids=["2-ranks", "3-ranks"])
def test_global_losses_and_gradients_equal_the_single_process_ones(sizes, extras):
    world, seed = len(sizes), 7
    per_rank = run_ranks(world, _local_losses, sizes, extras, seed)
    q, k = global_batch(seed, sizes, extras)
    b = q.shape[0]
    for index, (kind, reduction, normalize, backend) in enumerate(CASES):
        what = f"{kind} {reduction} normalize={normalize} {backend}"
        qd = q.float().double().requires_grad_()  # the values the ranks saw (float32)
        kd = k.float().double().requires_grad_()
        kk = kd if kind == "info_nce" else kd[:b]
        td = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        expected = oracle(kind, qd, kk, td, reduction, normalize)
        losses = [r[index][0] for r in per_rank]
        if reduction == "none":
            if kind == "nt_xent":  # each rank: its view-1 rows, then its view-2 rows
                parts = [torch.cat([expected[:b][s], expected[b:][s]]) for s in slices(sizes)]
            else:
                parts = [expected[s] for s in slices(sizes)]
            for got, want in zip(losses, parts):
                torch.testing.assert_close(got.double(), want.detach(), rtol=2e-5, atol=2e-6, msg=what)
            weights = [torch.linspace(0.5, 1.5, p.numel(), dtype=torch.float64) for p in parts]
            if kind == "nt_xent":
                gv = torch.zeros(2 * b, dtype=torch.float64)
                for s, w in zip(slices(sizes), weights):
                    n = s.stop - s.start
                    gv[s], gv[b + s.start:b + s.stop] = w[:n], w[n:]
            else:
                gv = torch.cat(weights)
            (expected * gv).sum().backward()
        else:
            mean = torch.stack(losses).double().mean()
            torch.testing.assert_close(mean, expected.detach(), rtol=2e-5, atol=2e-6, msg=what)
            expected.backward()
        # mean/sum: DDP averages over the ranks, so each rank's gradient / world is the global loss's;
        # none: the rows are the global vector's, and their gradient the global one as it is
        world_factor = 1 if reduction == "none" else world
        t_factor = world if reduction == "none" else 1
        for rank, s in enumerate(slices(sizes)):
            _, gq, gk, _ = per_rank[rank][index]
            torch.testing.assert_close(gq.double() / world_factor, qd.grad[s], rtol=2e-4, atol=2e-6, msg=what)
            mine_k = torch.cat([kd.grad[:b][s], kd.grad[b:][slices(extras)[rank]]]) if kind == "info_nce" \
                else kd.grad[:b][s]
            torch.testing.assert_close(gk.double() / world_factor, mine_k, rtol=2e-4, atol=2e-6, msg=what)
        if reduction == "sum":
            assert all(r[index][3] is None for r in per_rank)
            continue
        t_grad = torch.stack([r[index][3] for r in per_rank]).double().mean() * t_factor
        torch.testing.assert_close(t_grad, td.grad, rtol=2e-4, atol=2e-6, msg=f"{what}: temperature")


def _ddp_training(rank, world, sizes, seed):
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 6))
    ddp = DistributedDataParallel(model)
    scale = torch.nn.Parameter(torch.tensor(1.0))
    opt = torch.optim.SGD(list(ddp.parameters()) + [scale], lr=0.5)
    losses = []
    for step in range(3):
        q, k = global_batch(seed + step, sizes, [0] * len(sizes))
        mine = slices(sizes)[rank]
        loss = fastloss.info_nce_loss(ddp(q[mine].float()), ddp(k[mine].float()), 1 / scale.exp(), symmetric=True,
                                      normalize=True, all_gather=True)
        opt.zero_grad()
        loss.backward()
        scale.grad /= world  # a parameter outside DDP: average it as DDP does its own
        torch.distributed.all_reduce(scale.grad)
        opt.step()
        losses.append(float(loss))
    return [p.detach().clone() for p in model.parameters()] + [scale.detach().clone()], losses


def test_ddp_training_equals_single_process_training_on_the_global_batch():
    sizes, seed = [5, 3], 11
    per_rank = run_ranks(2, _ddp_training, sizes, seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 6))
    scale = torch.nn.Parameter(torch.tensor(1.0))
    opt = torch.optim.SGD(list(model.parameters()) + [scale], lr=0.5)
    for step in range(3):
        q, k = global_batch(seed + step, sizes, [0, 0])
        loss = fastloss.info_nce_loss(model(q.float()), model(k.float()), 1 / scale.exp(), symmetric=True,
                                      normalize=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert abs(sum(r[1][step] for r in per_rank) / 2 - float(loss)) < 1e-5
    expected = [p.detach() for p in model.parameters()] + [scale.detach()]
    for params, _ in per_rank:
        for got, want in zip(params, expected):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not torch.equal(expected[0], torch.nn.Sequential(torch.nn.Linear(6, 16)).state_dict()["0.weight"])


def _mismatched_width(rank, world):
    x = torch.randn(4, 5 if rank == 0 else 6)
    try:
        fastloss.info_nce_loss(x, x, all_gather=True)
    except ValueError as exc:
        return str(exc)
    return "no error"


def test_mismatched_widths_fail_on_every_rank_instead_of_hanging():
    messages = run_ranks(2, _mismatched_width)
    for m in messages:
        assert "all_gather=True needs query of the same width on every rank, got widths [5, 6]" in m, m


def _mismatched_dtype(rank, world):
    x = torch.randn(4, 5, dtype=torch.float32 if rank == 0 else torch.float64)
    try:
        fastloss.batch_contrastive_loss(x, torch.arange(4) % 2, all_gather=True)
    except ValueError as exc:
        return str(exc)
    return "no error"


def test_mismatched_dtypes_fail_on_every_rank_instead_of_hanging():
    for m in run_ranks(2, _mismatched_dtype):
        assert "needs embeddings of one dtype on every rank, got ['float32', 'float64']" in m, m


def _primitives(rank, world):
    from fastloss import distributed

    out = {}
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        g = torch.Generator().manual_seed(rank)
        x = (torch.randn(rank + 1, 3, dtype=torch.float64, generator=g) * 1e3 + 1e-5).to(dtype).requires_grad_()
        counts = distributed.row_counts("test", "x", x)
        everything = distributed.gather_rows(x, counts)
        weights = torch.arange(1, everything.numel() + 1, dtype=torch.float64).reshape(everything.shape) / 7
        (everything * weights.to(dtype)).sum().backward()
        out[str(dtype)] = (counts, distributed.offset_of(counts), everything.detach(), x.grad)
    labels = distributed.gather_labels(torch.arange(rank + 1) * 10 + rank, counts)
    total = distributed.all_reduce_sum(torch.tensor([rank + 0.5, 2.0 ** -40]))
    return out, labels, total, _losses_without_all_gather(rank)


def _losses_without_all_gather(rank):
    """Each in-batch loss without all_gather: this rank's rows alone, even inside a process group."""
    g = torch.Generator().manual_seed(100 + rank)
    x, z = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    y = torch.tensor([0, 1, 0, 1])
    return torch.stack([fastloss.batch_contrastive_loss(x, y), fastloss.batch_hard_triplet_loss(x, y),
                        fastloss.info_nce_loss(x, z), fastloss.nt_xent_loss(x, z)])


def test_primitives_gather_exactly_in_every_dtype():
    """gather_rows, gather_labels, all_reduce_sum, offset_of on 3 ranks of 1, 2 and 3 rows: the
    rows in rank order bit for bit in their own dtype (gloo carries half types as float32, which
    holds them exactly; float64 must travel as float64), and each rank's gradient the sum over
    the ranks of the gradient of its rows. Without all_gather a loss stays local in a group."""
    results = run_ranks(3, _primitives)
    rows = {}
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        mine = []
        for rank in range(3):
            g = torch.Generator().manual_seed(rank)
            mine.append((torch.randn(rank + 1, 3, dtype=torch.float64, generator=g) * 1e3 + 1e-5).to(dtype))
        rows[str(dtype)] = torch.cat(mine)
    for rank, (out, labels, total, local) in enumerate(results):
        torch.testing.assert_close(local, _losses_without_all_gather(rank), rtol=0, atol=0)
        for key, (counts, offset, everything, grad) in out.items():
            assert counts == [1, 2, 3] and offset == [0, 1, 3][rank], (key, counts, offset)
            assert everything.dtype == rows[key].dtype and torch.equal(everything, rows[key]), key
            weights = torch.arange(1, 19, dtype=torch.float64).reshape(6, 3) / 7
            expected = (3 * weights.to(rows[key].dtype).double())[offset:offset + rank + 1]
            assert grad.dtype == rows[key].dtype, key
            torch.testing.assert_close(grad.double(), expected, rtol=1e-2 if key != "torch.float64" else 0,
                                       atol=0, msg=key)
        assert torch.equal(labels, torch.tensor([0, 1, 11, 2, 12, 22])), labels
        assert total.dtype == torch.float64 and torch.equal(total, torch.tensor([4.5, 3 * 2.0 ** -40], dtype=torch.float64))


def test_outside_a_process_group_all_gather_is_the_plain_loss():
    q, k = torch.randn(5, 3), torch.randn(7, 3)
    torch.testing.assert_close(fastloss.info_nce_loss(q, k, all_gather=True), fastloss.info_nce_loss(q, k))
    torch.testing.assert_close(fastloss.nt_xent_loss(q, k[:5], all_gather=True), fastloss.nt_xent_loss(q, k[:5]))


# ---- the all-pairs contrastive loss ----

def contrastive_oracle(x, y, pos_margin, neg_margin, normalize, reduction):
    """pytorch-metric-learning's ContrastiveLoss, written here on the whole float64 matrix:
    torch.cdist's exact distances, every ordered pair i != j."""
    q = F.normalize(x, dim=1) if normalize else x
    d = torch.cdist(q, q, compute_mode="donot_use_mm_for_euclid_dist")
    same = y[:, None] == y[None, :]
    pos = same & ~torch.eye(len(y), dtype=torch.bool)
    pc, nc = (d - pos_margin).clamp_min(0)[pos], (neg_margin - d).clamp_min(0)[~same]
    if reduction == "avg_nonzero":
        mean = lambda c: c[c > 0].sum() / max(int((c > 0).sum()), 1)  # noqa: E731
        return mean(pc) + mean(nc)
    total = pc.sum() + nc.sum()
    return total / max(int(pos.sum() + (~same).sum()), 1) if reduction == "mean" else total


CONTRASTIVE_CASES = [(reduction, normalize, backend) for reduction in ("avg_nonzero", "mean", "sum")
                     for normalize in (True, False) for backend in BACKENDS]


def _local_contrastive(rank, world, sizes, seed):
    out = []
    for reduction, normalize, backend in CONTRASTIVE_CASES:
        xl, yl = rank_rows(seed, sizes, rank)
        loss = fastloss.batch_contrastive_loss(xl, yl, 0.3, 0.9, normalize=normalize, reduction=reduction,
                                               backend=backend, all_gather=True)
        loss.backward()
        out.append((loss.detach(), xl.grad))
    return out


def rank_rows(seed, sizes, rank):
    """This rank's slice of the global batch: its rows (float32, requiring grad) and labels."""
    x, y = contrastive_batch(seed, sizes)
    mine = slices(sizes)[rank]
    return x[mine].float().requires_grad_(), y[mine]


def contrastive_batch(seed, sizes, d=5):
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.5
    y = torch.randint(0, 3, (n,), generator=g)  # few labels: positives live on every rank
    return x, y


def assert_ranks_match(per_rank, index, oracle, x, sizes, what):
    """The mean over the ranks of their losses is the oracle's on the whole batch, and each rank's
    gradient / world (DDP's average) the oracle's for its rows."""
    xd = x.float().double().requires_grad_()  # the values the ranks saw (float32)
    expected = oracle(xd)
    expected.backward()
    mean = torch.stack([r[index][0] for r in per_rank]).double().mean()
    torch.testing.assert_close(mean, expected.detach(), rtol=2e-5, atol=2e-6, msg=what)
    for rank, s in enumerate(slices(sizes)):
        torch.testing.assert_close(per_rank[rank][index][1].double() / len(sizes), xd.grad[s], rtol=2e-4, atol=2e-6,
                                   msg=what)


@pytest.mark.parametrize("sizes", [[6, 3], [2, 7, 4], [5, 0, 4]], ids=["2-ranks", "3-ranks", "an-empty-rank"])
def test_global_contrastive_equals_the_single_process_loss(sizes):
    per_rank = run_ranks(len(sizes), _local_contrastive, sizes, 3)
    x, y = contrastive_batch(3, sizes)
    for index, (reduction, normalize, backend) in enumerate(CONTRASTIVE_CASES):
        assert_ranks_match(per_rank, index, lambda xd: contrastive_oracle(xd, y, 0.3, 0.9, normalize, reduction),
                           x, sizes, f"contrastive {reduction} normalize={normalize} {backend}")


def hard_triplet_oracle(x, y, margin, soft, normalize, reduction):
    """Hermans et al.'s batch-hard triplet loss, written here on the whole float64 matrix: per
    anchor the farthest positive and the nearest negative (exact distances; ties to the lowest
    index), anchors without either left out."""
    q = F.normalize(x, dim=1) if normalize else x
    d = torch.cdist(q, q, compute_mode="donot_use_mm_for_euclid_dist")
    costs = []
    for i in range(len(y)):
        positives = [j for j in range(len(y)) if j != i and y[j] == y[i]]
        negatives = [j for j in range(len(y)) if y[j] != y[i]]
        if positives and negatives:
            p = max(positives, key=lambda j: (float(d[i, j]), -j))
            n = min(negatives, key=lambda j: (float(d[i, j]), j))
            v = d[i, p] - d[i, n]
            costs.append(F.softplus(v) if soft else (v + margin).clamp_min(0))
    c = torch.stack(costs)
    if reduction == "avg_nonzero":
        return c[c > 0].sum() / max(int((c > 0).sum()), 1)
    return c.sum() / len(costs) if reduction == "mean" else c.sum()


HARD_CASES = [(reduction, soft, backend) for reduction in ("avg_nonzero", "mean", "sum") for soft in (False, True)
              for backend in BACKENDS]


def _local_hard_triplet(rank, world, sizes, seed):
    out = []
    for reduction, soft, backend in HARD_CASES:
        xl, yl = rank_rows(seed, sizes, rank)
        loss = fastloss.batch_hard_triplet_loss(xl, yl, 0.4, soft=soft, reduction=reduction, backend=backend,
                                                all_gather=True)
        loss.backward()
        out.append((loss.detach(), xl.grad))
    return out


@pytest.mark.parametrize("sizes", [[6, 3], [2, 7, 4], [5, 0, 4]], ids=["2-ranks", "3-ranks", "an-empty-rank"])
def test_global_batch_hard_equals_the_single_process_loss(sizes):
    per_rank = run_ranks(len(sizes), _local_hard_triplet, sizes, 5)
    x, y = contrastive_batch(5, sizes)
    for index, (reduction, soft, backend) in enumerate(HARD_CASES):
        assert_ranks_match(per_rank, index, lambda xd: hard_triplet_oracle(xd, y, 0.4, soft, True, reduction),
                           x, sizes, f"batch-hard {reduction} soft={soft} {backend}")


def _clustered_hard_triplet(rank, world, sizes):
    out = []
    for backend in BACKENDS:
        x, y = clustered_batch(sizes)
        xl = x[slices(sizes)[rank]].float().requires_grad_()
        loss = fastloss.batch_hard_triplet_loss(xl, y[slices(sizes)[rank]], 0.3, backend=backend, all_gather=True)
        loss.backward()
        out.append((loss.detach(), xl.grad))
    return out


def clustered_batch(sizes, d=4):
    """Tight clusters per label, one of them far from the rest: its anchors cost 0, the others
    do not, so avg_nonzero's count of costs > 0 differs from the count of anchors."""
    g = torch.Generator().manual_seed(11)
    n = sum(sizes)
    y = torch.arange(n) % 3
    centres = torch.tensor([[1.0, 0, 0, 0], [0.8, 0.6, 0, 0], [-1.0, 0, 0, 0]], dtype=torch.float64)
    return centres[y] + 0.25 * torch.randn(n, d, generator=g, dtype=torch.float64), y


def test_global_batch_hard_counts_only_the_costs_above_zero():
    sizes = [5, 4]
    per_rank = run_ranks(2, _clustered_hard_triplet, sizes)
    x, y = clustered_batch(sizes)
    # the case is as claimed: some anchors cost 0 (the mean over the costs > 0 exceeds the mean
    # over every anchor), so the two counts differ
    assert hard_triplet_oracle(x, y, 0.3, False, True, "avg_nonzero") > 1.05 * hard_triplet_oracle(
        x, y, 0.3, False, True, "mean") > 0
    for index, backend in enumerate(BACKENDS):
        assert_ranks_match(per_rank, index, lambda xd: hard_triplet_oracle(xd, y, 0.3, False, True, "avg_nonzero"),
                           x, sizes, f"clustered batch-hard {backend}")
