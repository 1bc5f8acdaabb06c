"""CLIP-style two-tower training with fastloss.InfoNCELoss(symmetric=True) and a learnable
temperature, on pairs made from scikit-learn's bundled handwritten digits (no download): tower A
sees the left half of an 8 x 8 digit, tower B the right half, and each must find its own other
half among all the other halves of the batch. Reports held-out retrieval (left half -> its right
half among every held-out right half), trains again from the same seed with the materialised torch
loss (F.cross_entropy on the B x B logits, both directions: the curves agree), then takes one
training step at a batch whose materialised logits would not fit in this machine's memory.

    .venv/bin/python examples/clip_pairs.py [--epochs 100] [--batch 256] [--large 65536]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import fastloss


class TwoTower(torch.nn.Module):
    """Two small encoders into one 32-d space, and CLIP's learnable logit scale (temperature =
    1 / exp(logit_scale), started at 0.07)."""

    def __init__(self) -> None:
        super().__init__()
        self.left = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32))
        self.right = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32))
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, left: torch.Tensor, right: torch.Tensor):
        return self.left(left), self.right(right), 1 / self.logit_scale.exp()


def halves(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The left and right 8 x 4 halves of 8 x 8 images given as 64 values."""
    grid = images.view(-1, 8, 8)
    return grid[:, :, :4].reshape(-1, 32), grid[:, :, 4:].reshape(-1, 32)


def materialised_clip_loss(a: torch.Tensor, b: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """The loss as it is usually written: the B x B logits in memory."""
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def recall_at_1(model: TwoTower, left: torch.Tensor, right: torch.Tensor) -> float:
    with torch.no_grad():
        a, b, _ = model(left, right)
        sim = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
        return float((sim.argmax(1) == torch.arange(len(left), device=left.device)).float().mean())


def train(loss_fn, left, right, epochs: int, batch: int):
    torch.manual_seed(0)
    model = TwoTower().to(left.device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    curve, times = [], []
    for _ in range(epochs):
        order = torch.randperm(len(left), device=left.device)
        start = time.perf_counter()
        total, steps = 0.0, 0
        for i in range(0, len(left) - batch + 1, batch):
            idx = order[i:i + batch]
            loss = loss_fn(*model(left[idx], right[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
        curve.append(total / steps)
        times.append(time.perf_counter() - start)
    return model, curve, sum(times) / len(times)


def machine_memory_gib() -> float:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def large_batch_step(model: TwoTower, images: torch.Tensor, n: int) -> None:
    """One training step of the loss over n pairs at once (noisy copies of the digits)."""
    g = torch.Generator().manual_seed(2)
    pick = torch.randint(0, len(images), (n,), generator=g).to(images.device)
    noisy = images[pick] + 0.05 * torch.randn(n, images.shape[1], generator=g).to(images.device)
    left, right = halves(noisy)
    criterion = fastloss.InfoNCELoss(symmetric=True, normalize=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    a, b, temperature = model(left, right)
    criterion(a, b, temperature).backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    logits_gib = n * n * 4 / 2**30
    print(f"one step on a batch of {n} pairs: {seconds:.2f} s, peak resident memory now {peak / 2**20:.2f} GiB "
          f"(grew by {(peak - before) / 2**20:.2f} GiB); the {n} x {n} logits alone would take {logits_gib:.1f} GiB "
          f"in float32 and the materialised loss holds them at least three times (logits, softmax, their "
          f"gradient): {3 * logits_gib:.0f} GiB against this machine's {machine_memory_gib():.0f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--large", type=int, default=65536, help="the large-batch step's B (0: skip it)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    images = torch.tensor(load_digits().data, dtype=torch.float32, device=args.device) / 16.0
    split = torch.randperm(len(images), generator=torch.Generator().manual_seed(1)).to(args.device)
    train_left, train_right = halves(images[split[:1400]])
    test_left, test_right = halves(images[split[1400:]])
    print(f"digit halves: {len(train_left)} training pairs, {len(test_left)} held out; batches of {args.batch} "
          f"({args.batch} x {args.batch} logits), {args.epochs} epochs on {args.device}; {os.cpu_count()} CPUs")
    torch.manual_seed(0)
    print(f"recall@1 of the untrained towers: {recall_at_1(TwoTower().to(args.device), test_left, test_right):.3f} "
          f"(chance {1 / len(test_left):.3f})")

    criterion = fastloss.InfoNCELoss(symmetric=True, normalize=True)
    model, curve, seconds = train(criterion, train_left, train_right, args.epochs, args.batch)
    print(f"fastloss.InfoNCELoss(symmetric=True): held-out recall@1 {recall_at_1(model, test_left, test_right):.3f}, "
          f"learned temperature {float(1 / model.logit_scale.detach().exp()):.4f}, {seconds * 1e3:.0f} ms per epoch")
    plain, plain_curve, plain_seconds = train(materialised_clip_loss, train_left, train_right, args.epochs,
                                              args.batch)
    print(f"materialised torch loss: held-out recall@1 {recall_at_1(plain, test_left, test_right):.3f}, "
          f"learned temperature {float(1 / plain.logit_scale.detach().exp()):.4f}, {plain_seconds * 1e3:.0f} ms per epoch")
    print("epoch  materialised  fastloss")
    for epoch in range(args.epochs):
        print(f"{epoch + 1:5d}  {plain_curve[epoch]:.7f}     {curve[epoch]:.7f}")
    gap = max(abs(p - q) / abs(p) for p, q in zip(plain_curve, curve))
    print(f"curves agree to {gap:.1e}")
    if args.large:
        large_batch_step(model, images, args.large)


if __name__ == "__main__":
    main()
