"""Metric learning on scikit-learn's bundled handwritten digits (no download) with
fastloss.BatchContrastiveLoss: every pair of a batch compared, tile by tile. Trains a small
embedding net, reports retrieval recall@1 on held-out digits (is each digit's nearest held-out
neighbour the same digit?), repeats the run with pytorch-metric-learning's ContrastiveLoss from
the same seed when it is installed (the curves agree), then takes one training step on a batch
far larger than the materialised losses fit in this machine's memory.

    .venv/bin/python examples/metric_learning.py [--epochs 20] [--batch 256] [--large 65536]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from sklearn.datasets import load_digits

import fastloss


def make_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32))


def recall_at_1(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The fraction of rows whose nearest other row (Euclidean, unit embeddings) has their label."""
    with torch.no_grad():
        e = torch.nn.functional.normalize(net(x), dim=1)
        d = torch.cdist(e, e)
        d.fill_diagonal_(float("inf"))
        return float((y[d.argmin(1)] == y).float().mean())


def train(loss_fn, x, y, epochs: int, batch: int):
    torch.manual_seed(0)
    net = make_net().to(x.device)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    curve, times = [], []
    for _ in range(epochs):
        order = torch.randperm(len(y), device=y.device)
        start = time.perf_counter()
        total, steps = 0.0, 0
        for i in range(0, len(y) - batch + 1, batch):
            idx = order[i:i + batch]
            loss = loss_fn(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
        curve.append(total / steps)
        times.append(time.perf_counter() - start)
    return net, curve, sum(times) / len(times)


def large_batch_step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, n: int) -> None:
    """One forward+backward of the loss over n embeddings at once (noisy copies of the digits)."""
    g = torch.Generator().manual_seed(2)
    pick = torch.randint(0, len(y), (n,), generator=g).to(x.device)
    inputs = x[pick] + 0.05 * torch.randn(n, x.shape[1], generator=g).to(x.device)
    labels = y[pick]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    fastloss.batch_contrastive_loss(net(inputs), labels).backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    matrix_gib = n * n * 4 / 2**30
    print(f"one step on a batch of {n} embeddings: {seconds:.2f} s, peak resident memory now "
          f"{peak / 2**20:.2f} GiB (grew by {(peak - before) / 2**20:.2f} GiB); the {n} x {n} distance matrix "
          f"alone would take {matrix_gib:.1f} GiB in float32, and the materialised losses hold several")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--large", type=int, default=65536, help="the large-batch step's N (0: skip it)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32, device=args.device) / 16.0
    y = torch.tensor(digits.target, device=args.device)
    g = torch.Generator().manual_seed(1)
    split = torch.randperm(len(y), generator=g)
    train_idx, test_idx = split[:1400].to(args.device), split[1400:].to(args.device)
    xt, yt, xh, yh = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    torch.manual_seed(0)
    print(f"digits: {len(yt)} train, {len(yh)} held out; batches of {args.batch}, every pair of a batch "
          f"({args.batch * (args.batch - 1)} ordered pairs), {args.epochs} epochs on {args.device}")
    print(f"recall@1 of the untrained net: {recall_at_1(make_net().to(args.device), xh, yh):.3f}")

    criterion = fastloss.BatchContrastiveLoss(pos_margin=0.0, neg_margin=1.0)
    net, curve, seconds = train(criterion, xt, yt, args.epochs, args.batch)
    print(f"fastloss.BatchContrastiveLoss: recall@1 on held-out digits {recall_at_1(net, xh, yh):.3f}, "
          f"{seconds * 1e3:.0f} ms per epoch")
    try:
        from pytorch_metric_learning.losses import ContrastiveLoss
    except ImportError:
        print("(pytorch-metric-learning is not installed: no side-by-side run)")
    else:
        peer = ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)
        peer_net, peer_curve, peer_seconds = train(peer, xt, yt, args.epochs, args.batch)
        print(f"pytorch-metric-learning ContrastiveLoss: recall@1 {recall_at_1(peer_net, xh, yh):.3f}, "
              f"{peer_seconds * 1e3:.0f} ms per epoch")
        print("epoch  pytorch-metric-learning  fastloss")
        for epoch in range(args.epochs):
            print(f"{epoch + 1:5d}  {peer_curve[epoch]:.7f}                {curve[epoch]:.7f}")
        gap = max(abs(p - q) / abs(p) for p, q in zip(peer_curve, curve))
        print(f"curves agree to {gap:.1e}")
    if args.large:
        large_batch_step(net, x, y, args.large)


if __name__ == "__main__":
    main()
