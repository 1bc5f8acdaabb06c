"""Train a small siamese network on scikit-learn's bundled handwritten digits (no download)
with fastloss.ContrastiveLoss: pairs drawn from the training split (similar = same digit),
verification accuracy on held-out pairs, and the same run with the plain-torch loss from the
same seed to show the curves agree.

    .venv/bin/python examples/siamese.py [--epochs 15] [--distance euclidean|manhattan|cosine]
"""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.datasets import load_digits

import fastloss
from fastloss import reference


def make_pairs(x: torch.Tensor, y: torch.Tensor, count: int, generator: torch.Generator):
    """count pairs, half of the same digit (label 1), half of different digits (label 0)."""
    by_class = [torch.nonzero(y == c).flatten() for c in range(10)]
    first, second, label = [], [], []
    for k in range(count):
        c = int(torch.randint(0, 10, (1,), generator=generator))
        i = by_class[c][torch.randint(0, len(by_class[c]), (1,), generator=generator)]
        if k % 2 == 0:
            j = by_class[c][torch.randint(0, len(by_class[c]), (1,), generator=generator)]
        else:
            other = (c + int(torch.randint(1, 10, (1,), generator=generator))) % 10
            j = by_class[other][torch.randint(0, len(by_class[other]), (1,), generator=generator)]
        first.append(i)
        second.append(j)
        label.append(1.0 if k % 2 == 0 else 0.0)
    return x[torch.cat(first)], x[torch.cat(second)], torch.tensor(label, device=x.device)


def make_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))


def distance(a, b, kind):
    if kind == "euclidean":
        return torch.nn.functional.pairwise_distance(a, b, p=2)
    if kind == "manhattan":
        return torch.nn.functional.pairwise_distance(a, b, p=1)
    return 1 - torch.nn.functional.cosine_similarity(a, b)


def train(loss_fn, pairs, test_pairs, epochs: int, margin: float, kind: str):
    torch.manual_seed(0)
    net = make_net().to(pairs[0].device)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    a, b, y = pairs
    curve, times = [], []
    for _ in range(epochs):
        order = torch.randperm(len(y), device=y.device)
        start = time.perf_counter()
        total = torch.zeros((), device=y.device)
        for i in range(0, len(y), 128):
            idx = order[i:i + 128]
            loss = loss_fn(net(a[idx]), net(b[idx]), y[idx], margin, kind)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        curve.append(float(total) / len(y))
        times.append(time.perf_counter() - start)
    with torch.no_grad():  # verify: similar when the distance is under half the margin
        ta, tb, ty = test_pairs
        pred = (distance(net(ta), net(tb), kind) < margin / 2).float()
        accuracy = float((pred == ty).float().mean())
    return curve, accuracy, sum(times[1:]) / max(1, len(times) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--distance", default="euclidean", choices=["euclidean", "manhattan", "cosine"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    margin = {"euclidean": 2.0, "manhattan": 6.0, "cosine": 0.5}[args.distance]

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32, device=args.device) / 16.0
    y = torch.tensor(digits.target, device=args.device)
    g = torch.Generator().manual_seed(1)
    split = torch.randperm(len(y), generator=g)
    train_idx, test_idx = split[:1400].to(args.device), split[1400:].to(args.device)
    pairs = make_pairs(x[train_idx], y[train_idx], 6000, g)
    test_pairs = make_pairs(x[test_idx], y[test_idx], 2000, g)

    def fast(a, b, t, m, kind):
        return fastloss.contrastive_loss(a, b, t, margin=m, distance=kind)

    def plain(a, b, t, m, kind):
        return reference.contrastive_loss(a, b, t, margin=m, distance=kind)

    print(f"digits: {len(train_idx)} train, {len(test_idx)} held out; 6000 training pairs, 2000 test pairs; "
          f"distance {args.distance}, margin {margin}, {args.epochs} epochs on {args.device}")
    ref_curve, ref_acc, ref_time = train(plain, pairs, test_pairs, args.epochs, margin, args.distance)
    fast_curve, fast_acc, fast_time = train(fast, pairs, test_pairs, args.epochs, margin, args.distance)
    print("epoch  plain-torch loss  fastloss loss")
    for epoch in range(args.epochs):
        print(f"{epoch + 1:5d}  {ref_curve[epoch]:.7f}         {fast_curve[epoch]:.7f}")
    gap = max(abs(p - q) / abs(p) for p, q in zip(ref_curve, fast_curve))
    print(f"verification accuracy on held-out pairs: plain torch {ref_acc:.3f}, fastloss {fast_acc:.3f}")
    print(f"time per epoch: plain torch {ref_time * 1e3:.1f} ms, fastloss {fast_time * 1e3:.1f} ms")
    print(f"curves agree to {gap:.1e}")


if __name__ == "__main__":
    main()
