"""The benchmark report keeps working and keeps its honesty check: a small run end to end, a
provider that disagrees with float64 flagged and never ranked, an in-batch case in its own
process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import batch_report  # noqa: E402
import cases  # noqa: E402
import honesty  # noqa: E402
import report  # noqa: E402
import tables  # noqa: E402


def test_a_small_report_end_to_end(tmp_path):
    """The memory-bound part for one loss: JSON with the machine and every row checked, the
    Markdown tables, the plots."""
    done = subprocess.run([sys.executable, str(BENCH / "report.py"), "--quick", "--parts", "memory-bound",
                           "--losses", "mse", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((tmp_path / "report.json").read_text())
    for key in ("machine", "torch", "triton", "fastloss", "commit", "caching_allocator", "date"):
        assert saved["meta"].get(key), key
    rows = saved["memory_bound"]["regimes"][0]["rows"]
    timed = [r for r in rows if "seconds" in r]
    assert {r["mode"] for r in timed} == {"forward", "train", "backward"}
    assert {r["provider"] for r in timed} == {"fastloss-cpu", "torch-eager", "torch-compile"}
    assert all(r["ok"] and r["error_rel"] < honesty.TOLERANCE[getattr(torch, r["dtype"])] and r["pct_of_ceiling"] > 0
               for r in timed)
    assert [r["provider"] for r in rows if "skipped" in r] == ["fastloss-cpu"]  # its backward is fused
    text = (tmp_path / "report.md").read_text()
    assert "#### mse" in text and "DISAGREES" not in text
    assert (tmp_path / "speedup.png").stat().st_size > 10_000


def test_a_provider_that_disagrees_is_flagged_and_never_ranked():
    wrong = cases.Provider("wrong", lambda loss: (lambda x, t: torch.nn.functional.mse_loss(x, t) * 1.001))
    eager = cases.Provider("torch-eager", lambda loss: cases.TORCH_FN[loss])
    rows = report.measure_group("cpu", [wrong, eager], ("mse", 1 << 12, "float32", "train"), 0)
    by_name = {r["provider"]: r for r in rows}
    assert not by_name["wrong"]["ok"] and by_name["wrong"]["error_rel"] > 5e-4
    assert by_name["torch-eager"]["ok"]
    index = tables.index_rows(rows)
    assert tables.ratio(index, by_name["torch-eager"], "wrong") is None
    assert tables.ratio(index, by_name["wrong"], "torch-eager") is None
    text = tables.loss_tables([{"regime": "caching", "rows": rows}])
    assert "**DISAGREES**" in text


def test_the_relative_error():
    loss, grad = torch.tensor(2.0, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    assert honesty.relative_error((loss, [grad]), (loss, [grad])) == 0.0
    assert honesty.relative_error((loss * 1.01, [grad]), (loss, [grad])) == pytest.approx(0.01)
    # a gradient's error is elementwise, against |g| + mean |g|
    assert honesty.relative_error((loss, [grad * 0.98]), (loss, [grad])) == pytest.approx(0.01)
    # one element in 10^4 may sit across a hinge from float64; more may not
    big = torch.randn(100_000, dtype=torch.float64)
    few, many = big.clone(), big.clone()
    few[:10] += 1.0
    many[:20] += 1.0
    assert honesty.relative_error((loss, [few]), (loss, [big])) < 1e-12
    assert honesty.relative_error((loss, [many]), (loss, [big])) > 0.1
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    assert not honesty.agrees(honesty.relative_error((nan, []), (loss, [])), torch.float32)
    assert honesty.agrees(honesty.relative_error((nan, []), (nan, [])), torch.float32)


def test_an_in_batch_case_in_its_own_process():
    rows = batch_report.run_case("batch_contrastive", "fastloss-cpu", 256, 32, "gaussian",
                                 ["forward", "train", "backward"], 4.0, 300)
    by_mode = {r["mode"]: r for r in rows}
    for mode in ("forward", "train"):
        r = by_mode[mode]
        assert r["ok"] and r["seconds"] > 0 and r["peak_extra_bytes"] >= 0 and r["reference"] == "float64 formula"
    assert by_mode["backward"]["skipped"].startswith("fused")
