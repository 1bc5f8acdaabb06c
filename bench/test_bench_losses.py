"""pytest-benchmark suite: each loss's forward+backward, fastloss's backends against torch
eager and torch.compile, plus the device copy that sets the bandwidth ceiling.

    .venv/bin/python -m pytest bench/test_bench_losses.py
(bench/report.py runs the same cases and prints the table with ratios.)
"""

import pytest
import torch

import cases

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SIZES = [1 << 20, 1 << 25]
PROVIDERS = cases.providers(DEVICE)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"2^{n.bit_length() - 1}")
@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("loss", cases.LOSSES)
def test_forward_backward(benchmark, loss, provider, n):
    case = cases.make_case(loss, n, torch.float32, DEVICE)
    step = PROVIDERS[provider](case)
    step()  # warm-up (and compilation)

    def run():
        step()
        _sync()

    benchmark.extra_info["bytes"] = case.nbytes
    benchmark(run)


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"2^{n.bit_length() - 1}")
def test_copy_ceiling(benchmark, n):
    copy, nbytes = cases.copy_step(n, torch.float32, DEVICE)

    def run():
        copy()
        _sync()

    benchmark.extra_info["bytes"] = nbytes
    benchmark(run)


BATCH_N, BATCH_D = 2048, 128


def _batch_step(loss, provider):
    """One forward+backward of an in-batch loss on (BATCH_N, BATCH_D) embeddings."""
    import fastloss
    from fastloss import reference

    torch.manual_seed(0)
    x = torch.randn(BATCH_N, BATCH_D, device=DEVICE, requires_grad=True)
    y = torch.randint(0, BATCH_N // 16, (BATCH_N,), device=DEVICE)
    if provider.startswith("fastloss-"):
        fn = fastloss.batch_contrastive_loss if loss == "contrastive" else fastloss.batch_hard_triplet_loss
        backend = provider.split("-", 1)[1]
        call = lambda: fn(x, y, backend=backend)  # noqa: E731
    elif provider == "torch-compile":
        compiled = torch.compile(reference.batch_contrastive_loss if loss == "contrastive"
                                 else reference.batch_hard_triplet_loss)
        call = lambda: compiled(x, y)  # noqa: E731
    else:
        from pytorch_metric_learning import losses, miners

        if loss == "contrastive":
            peer = losses.ContrastiveLoss()
            call = lambda: peer(x, y)  # noqa: E731
        else:
            miner, peer = miners.BatchHardMiner(), losses.TripletMarginLoss(margin=0.05)
            call = lambda: peer(x, y, miner(x, y))  # noqa: E731

    def step():
        x.grad = None
        call().backward()
        _sync()
    return step


BATCH_PROVIDERS = [p for p in PROVIDERS if p.startswith("fastloss-")] + ["pytorch-metric-learning", "torch-compile"]


@pytest.mark.parametrize("provider", BATCH_PROVIDERS)
@pytest.mark.parametrize("loss", ["contrastive", "hard_triplet"])
def test_batch_forward_backward(benchmark, loss, provider):
    step = _batch_step(loss, provider)
    step()  # warm-up (and compilation)
    benchmark.extra_info["flops"] = 6 * BATCH_N * BATCH_N * BATCH_D
    benchmark(step)
