"""The examples run, and their drop-in comparisons hold."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args, "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_autoencoder_curves_agree():
    pytest.importorskip("sklearn", reason="the example needs scikit-learn (installed by `make setup`)")
    out = run_example("autoencoder.py", "--epochs", "6")
    gap = float(re.search(r"curves agree to ([0-9.e+-]+)", out).group(1))
    assert gap < 1e-4, out
    assert out.count("largest relative gap") == 2


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_siamese_contrastive_curves_agree_and_it_learns(distance):
    pytest.importorskip("sklearn", reason="the example needs scikit-learn (installed by `make setup`)")
    out = run_example("siamese.py", "--epochs", "4", "--distance", distance)
    gap = float(re.search(r"curves agree to ([0-9.e+-]+)", out).group(1))
    assert gap < 1e-5, out
    accuracy = float(re.search(r"fastloss ([0-9.]+)\n", out).group(1))
    assert accuracy > 0.8, out


def test_metric_learning_learns_agrees_with_the_peer_and_takes_a_large_batch():
    out = run_example("metric_learning.py", "--epochs", "6", "--large", "8192")
    untrained = float(re.search(r"recall@1 of the untrained net: ([0-9.]+)", out).group(1))
    trained = float(re.search(r"BatchContrastiveLoss: recall@1 on held-out digits ([0-9.]+)", out).group(1))
    assert trained > 0.9 and trained > untrained, out
    gap = float(re.search(r"curves agree to ([0-9.e+-]+)", out).group(1))
    assert gap < 1e-4, out
    assert "one step on a batch of 8192 embeddings" in out, out


def test_clip_pairs_learns_agrees_with_the_materialised_loss_and_takes_a_large_batch():
    pytest.importorskip("sklearn", reason="the example needs scikit-learn (installed by `make setup`)")
    out = run_example("clip_pairs.py", "--epochs", "30", "--large", "8192")
    recall = float(re.search(r"InfoNCELoss\(symmetric=True\): held-out recall@1 ([0-9.]+)", out).group(1))
    chance = float(re.search(r"\(chance ([0-9.]+)\)", out).group(1))
    assert recall > 20 * chance, out
    temperature = float(re.search(r"InfoNCELoss.*learned temperature ([0-9.]+)", out).group(1))
    assert abs(temperature - 0.07) > 0.005, out  # the logit scale learned
    gap = float(re.search(r"curves agree to ([0-9.e+-]+)", out).group(1))
    assert gap < 1e-5, out
    assert "one step on a batch of 8192 pairs" in out, out


@pytest.mark.parametrize("loss", ["info_nce", "contrastive"])
def test_ddp_example_under_torchrun_matches_one_process(loss):
    pytest.importorskip("sklearn", reason="the example needs scikit-learn (installed by `make setup`)")
    script = str(ROOT / "examples" / "ddp_contrastive.py")
    args = ["--epochs", "2", "--loss", loss]
    single = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script, *args]
    ranks = subprocess.run(launch, capture_output=True, text=True, timeout=300)
    assert ranks.returncode == 0, ranks.stderr
    assert f"{loss}: 2 process(es) on cpu, global batch 512 (256 + 256 rows per rank)" in ranks.stdout, ranks.stdout

    def numbers(out, pattern):
        return [float(v) for v in re.findall(pattern, out)]

    for pattern in (r"loss ([0-9.]+)", r"parameter checksum ([0-9.]+)"):
        one, two = numbers(single.stdout, pattern), numbers(ranks.stdout, pattern)
        assert one and len(one) == len(two), (single.stdout, ranks.stdout)
        assert all(abs(a - b) <= 1e-4 * abs(a) for a, b in zip(one, two)), (single.stdout, ranks.stdout)
