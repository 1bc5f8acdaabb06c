"""The report's cases as a pytest-benchmark suite: the quick plan's memory-bound groups and
in-batch cases, one benchmark group per (loss, size, dtype, mode) holding every provider and
the copy that sets the ceiling, so a group's table reads as a comparison.

    .venv/bin/python -m pytest bench/ --benchmark-only

Each provider is checked against float64 before it is timed: fastloss fails the test if it
disagrees, a peer that disagrees (torch's bfloat16 triplet and cosine embedding do) is skipped.
bench/report.py runs the same cases with interleaved rounds, ceilings, memory and plots.
"""

import pytest
import torch
import torch._functorch.config

import batch_report
import cases
import honesty
import report

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# the backward-alone cases keep the graph (retain_graph), which donated buffers forbid
torch._functorch.config.donated_buffer = False
PLAN = report.PLANS[f"quick-{DEVICE}"]
GROUPS = report.groups(PLAN, "gpu" if DEVICE == "cuda" else "caching", list(PLAN["losses"]))
PROVIDERS = {p.name: p for p in cases.providers(DEVICE)}


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _group_id(group):
    loss, size, dtype, mode = group
    return f"{loss}-{cases.size_label(size)}-{dtype}-{mode}"


@pytest.mark.parametrize("provider", list(PROVIDERS) + ["copy"])
@pytest.mark.parametrize("group", GROUPS, ids=_group_id)
def test_memory_bound(benchmark, group, provider):
    loss, size, dtype_name, mode = group
    dtype = getattr(torch, dtype_name)
    case = cases.make_case(loss, size, dtype, DEVICE)
    benchmark.group = _group_id(group)
    if provider == "copy":
        step, nbytes = cases.copy_step(case.nbytes(mode), DEVICE)
    else:
        p = PROVIDERS[provider]
        if mode == "backward" and p.fused_backward:
            pytest.skip(cases.FUSED_BACKWARD)
        expected = honesty.reference(cases.TORCH_FN[loss], case.sets[0], case.kwargs)
        got = honesty.evaluate(p.fn(loss), case.sets[0], case.kwargs, with_grads=mode != "forward")
        error = honesty.relative_error(got, expected if mode != "forward" else (expected[0], []))
        if not honesty.agrees(error, dtype):
            message = f"{provider} disagrees with float64: {error:.1e}"
            assert not provider.startswith("fastloss"), message
            pytest.skip(message + " (flagged in the report and not timed)")  # a peer's precision, not ours
        step, nbytes = p.step(case, mode), case.nbytes(mode)
    step()  # warm-up (and compilation)
    benchmark.extra_info["bytes"] = nbytes

    def run():
        step()
        _sync()
    benchmark(run)


BATCH = PLAN.get("batch") or {"losses": (), "sizes": (), "dims": ()}
BATCH_CASES = [c for c in batch_report.plan(list(BATCH["losses"]), list(BATCH["sizes"]), list(BATCH["dims"]),
                                            list(batch_report.PROVIDERS)) if c[4] == "gaussian"]


@pytest.mark.parametrize("case", BATCH_CASES, ids=lambda c: f"{c[0]}-N{c[2]}-D{c[3]}-{c[1]}")
def test_in_batch_train(benchmark, case):
    """Forward+backward of an in-batch loss (peak memory: bench/report.py, a process per case)."""
    loss, provider, n, d, kind = case
    x, y = batch_report.make_inputs(loss, n, d, kind == "clustered")
    fn = batch_report.loss_fn(loss, provider)
    check = batch_report.check(loss, fn, x, y, n)
    assert check["ok"], f"{provider} disagrees with float64: {check['error_rel']:.1e}"
    benchmark.group = f"{loss}-N{n}-D{d}-train"
    benchmark.extra_info["flops"] = batch_report.flops(loss, n, d, "train")
    leaves = [t for t in (x, y) if t.requires_grad]

    def step():
        for t in leaves:
            t.grad = None
        fn(x, y).backward()
        _sync()
    benchmark(step)
