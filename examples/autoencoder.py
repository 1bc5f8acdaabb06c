"""Train a small autoencoder on scikit-learn's bundled handwritten digits (no download) twice
from the same seed: once with the torch loss, once with the fastloss drop-in. For MSE and for
BCE-with-logits it prints both loss curves, how far apart they are, and the time per epoch.

    .venv/bin/python examples/autoencoder.py [--epochs 40] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import fastloss


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(64, 48), torch.nn.ReLU(),
        torch.nn.Linear(48, 12), torch.nn.ReLU(),
        torch.nn.Linear(12, 48), torch.nn.ReLU(),
        torch.nn.Linear(48, 64),
    )


def train(loss_fn, data: torch.Tensor, epochs: int, seed: int, batch: int) -> tuple[list[float], float]:
    """Mean training loss per epoch, and seconds per epoch (after the first)."""
    torch.manual_seed(seed)
    model = make_model().to(data.device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    curve, times = [], []
    for _ in range(epochs):
        order = torch.randperm(len(data), device=data.device)
        start = time.perf_counter()
        total = torch.zeros((), device=data.device)
        for i in range(0, len(data), batch):
            x = data[order[i:i + batch]]
            loss = loss_fn(model(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(x)
        curve.append(float(total) / len(data))  # one sync per epoch
        times.append(time.perf_counter() - start)
    return curve, sum(times[1:]) / max(1, len(times) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    digits = load_digits()
    data = torch.tensor(digits.data, dtype=torch.float32, device=args.device) / 16.0  # pixels in [0, 1]
    print(f"{len(data)} digits of 8x8 pixels on {args.device}; {args.epochs} epochs, batch {args.batch}")
    pairs = {
        "MSE": (F.mse_loss, fastloss.mse_loss),
        "BCE-with-logits": (F.binary_cross_entropy_with_logits, fastloss.binary_cross_entropy_with_logits),
    }
    worst = 0.0
    for name, (torch_loss, fast_loss) in pairs.items():
        ref_curve, ref_time = train(torch_loss, data, args.epochs, seed=0, batch=args.batch)
        fast_curve, fast_time = train(fast_loss, data, args.epochs, seed=0, batch=args.batch)
        gap = max(abs(a - b) / abs(a) for a, b in zip(ref_curve, fast_curve))
        worst = max(worst, gap)
        print(f"\n{name}: epoch  torch loss   fastloss loss")
        for epoch in sorted({0, 1, 2, 4, 9, 19, args.epochs - 1} & set(range(args.epochs))):
            print(f"  {epoch + 1:5d}  {ref_curve[epoch]:.7f}  {fast_curve[epoch]:.7f}")
        print(f"  largest relative gap between the curves: {gap:.2e}")
        print(f"  time per epoch: torch {ref_time * 1e3:.1f} ms, fastloss {fast_time * 1e3:.1f} ms "
              f"(a tiny model: the loss is a small share of each step)")
    print(f"\ncurves agree to {worst:.1e} (float32 rounding differences, compounded by training)")


if __name__ == "__main__":
    main()
