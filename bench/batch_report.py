"""The in-batch losses' part of the report: time and peak extra memory of fastloss's tiled
kernels against pytorch-metric-learning and a materialised torch formula (eager and under
torch.compile), in three modes, with fastloss's effective FLOP/s against a matrix product
measured in the same run. `bench/report.py` runs it; alone:

    python bench/batch_report.py [--sizes 1024,4096,16384,32768] [--dims 128] [--losses ...]
                                 [--modes forward,train,backward] [--memory-gib 12] [--out DIR]

The embeddings are Gaussian rows (far apart after normalisation: few negative pairs within
neg_margin = 1, and with N / 16 labels few positive pairs, so most coefficient tiles are zeros
and fastloss skips their products) and, for fastloss, also "clustered" rows (1 + 0.3 x Gaussian:
every negative pair within the margin, the dense case) at D = 128. Every (loss, N, D, provider)
runs in a fresh process (peak memory is per process): its loss and gradients are first compared
with float64 (the materialised formula of fastloss.reference up to N = 8192, above it fastloss's
float64 tiled kernel, itself tested against the formula), then each mode is timed (torch.compile's
first call, the compilation, reported apart). The peak extra memory is the process's peak
resident memory during a timed step minus its resident memory before it (Linux: VmHWM reset
through /proc/self/clear_refs). A provider that runs out of memory (each process may allocate at
most --memory-gib) or time is reported so, and not run at larger N.

Effective FLOP/s counts the products a materialised pass needs: 2 R C D for the R x C matrix in
the forward, twice that more in the backward (N x N; B x B for InfoNCE and CLIP; 2B x 2B for
NT-Xent, N = B per view). fastloss's tiled softmax losses recompute the logits in the backward,
so their limit in training is 75% of the ceiling: float32 matrix products of 4096 x D by D x 4096
(compute-bound, the same D) timed in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MARGIN_LOSSES = ("batch_contrastive", "batch_hard_triplet")
SOFTMAX_LOSSES = ("info_nce", "clip", "nt_xent")
LOSSES = MARGIN_LOSSES + SOFTMAX_LOSSES
MODES = ("forward", "train", "backward")
PROVIDERS = ("fastloss-cpu", "pml", "torch-eager", "torch-compile")
# who runs each loss: pml has no InfoNCE with a separate key set; for the margin losses pml is the
# eager materialised computation a user would run, the formula is kept to torch.compile
PROVIDERS_OF = {"batch_contrastive": ("fastloss-cpu", "pml", "torch-compile"),
                "batch_hard_triplet": ("fastloss-cpu", "pml", "torch-compile"),
                "info_nce": ("fastloss-cpu", "torch-eager", "torch-compile"),
                "clip": ("fastloss-cpu", "torch-eager", "torch-compile"),
                "nt_xent": ("fastloss-cpu", "pml", "torch-eager", "torch-compile")}
CLUSTERED_SIZES = (4096, 16384)  # at D = 128, fastloss's margin losses, training
SAMPLES_PER_CLASS = 16  # labels: N / 16 classes, as a P x K sampler gives
CHECK_FORMULA_MAX = 8192  # up to this N the float64 reference is the materialised formula
FUSED = "fused: the gradient is computed in the forward pass (see train)"
# batch-hard picks each anchor's hardest candidates by argmax/argmin: a near-tie (a gap below
# float32's resolution) can pick another candidate in float64, changing three rows' gradients
GRAD_OUTLIERS = {"batch_hard_triplet": 1e-3}


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def loss_fn(loss: str, provider: str):
    """fn(x, y) -> loss of `provider`: y the labels (margin losses) or the keys / second view."""
    import torch

    import fastloss
    from fastloss import reference

    if provider.startswith("fastloss-"):
        backend = provider.split("-", 1)[1]
        return {"batch_contrastive": lambda x, y: fastloss.batch_contrastive_loss(x, y, backend=backend),
                "batch_hard_triplet": lambda x, y: fastloss.batch_hard_triplet_loss(x, y, backend=backend),
                "info_nce": lambda x, y: fastloss.info_nce_loss(x, y, 0.07, normalize=True, backend=backend),
                "clip": lambda x, y: fastloss.info_nce_loss(x, y, 0.07, symmetric=True, normalize=True,
                                                            backend=backend),
                "nt_xent": lambda x, y: fastloss.nt_xent_loss(x, y, 0.5, backend=backend)}[loss]
    if provider == "pml":
        from pytorch_metric_learning import losses, miners

        if loss == "batch_contrastive":
            return losses.ContrastiveLoss()
        if loss == "batch_hard_triplet":
            miner, peer = miners.BatchHardMiner(), losses.TripletMarginLoss(margin=0.05)
            return lambda x, y: peer(x, y, miner(x, y))
        peer = losses.NTXentLoss(temperature=0.5)  # the two views as one batch, a pair per label
        return lambda x, y: peer(torch.cat([x, y]), torch.arange(x.shape[0], device=x.device).repeat(2))
    formula = {"batch_contrastive": lambda x, y: reference.batch_contrastive_loss(x, y),
               "batch_hard_triplet": lambda x, y: reference.batch_hard_triplet_loss(x, y),
               "info_nce": lambda x, y: reference.info_nce_loss(x, y, 0.07, False, True),
               "clip": lambda x, y: reference.info_nce_loss(x, y, 0.07, True, True),
               "nt_xent": lambda x, y: reference.nt_xent_loss(x, y, 0.5)}[loss]
    return torch.compile(formula) if provider == "torch-compile" else formula


def flops(loss: str, n: int, d: int, mode: str) -> float:
    """The products of a materialised pass of `mode`: 2 R C D forward, 4 R C D backward."""
    side = 2 * n if loss == "nt_xent" else n
    return {"forward": 2, "train": 6, "backward": 4}[mode] * side * side * d


def make_inputs(loss: str, n: int, d: int, clustered: bool):
    import torch

    torch.manual_seed(0)
    x = (1.0 + 0.3 * torch.randn(n, d) if clustered else torch.randn(n, d)).requires_grad_()
    if loss in SOFTMAX_LOSSES:
        return x, torch.randn(n, d).requires_grad_()
    return x, torch.randint(0, max(1, n // SAMPLES_PER_CLASS), (n,))


def check(loss: str, fn, x, y, n: int) -> dict:
    """The provider's loss and gradients against float64 (the first call: a warm-up too)."""
    import honesty

    reference_fn = loss_fn(loss, "torch-eager") if n <= CHECK_FORMULA_MAX else loss_fn(loss, "fastloss-cpu")
    t0 = time.perf_counter()
    got = honesty.evaluate(fn, (x, y), {}, with_grads=True)
    first = time.perf_counter() - t0
    expected = honesty.reference(reference_fn, (x, y), {})
    error = honesty.relative_error(got, expected, GRAD_OUTLIERS.get(loss, honesty.OUTLIER_FRACTION))
    ok = honesty.agrees(error, x.dtype)
    return {"error_rel": error, "ok": bool(ok), "first_call": first,
            "reference": "float64 formula" if n <= CHECK_FORMULA_MAX else "fastloss float64 kernel"}


def _timed_steps(step, budget: float = 1.0, most: int = 15) -> dict:
    """Three steps (fewer when they take over 2 budgets), more until `budget` seconds or `most`
    steps; the median, min and max seconds and the peak extra memory."""
    times, peaks = [], []
    while not times or (len(times) < 3 and sum(times) < 2 * budget) or (sum(times) < budget and len(times) < most):
        base = _rss("VmRSS:")
        Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        peaks.append(_rss("VmHWM:") - base)
    return {"seconds": statistics.median(times), "min": min(times), "max": max(times), "steps": len(times),
            "peak_extra_bytes": max(peaks)}


def child(loss: str, provider: str, n: int, d: int, rows_kind: str, modes: list[str], memory_gib: float) -> list:
    """One (loss, provider, N, D) in this process, each mode: the rows, as JSON on stdout's last line."""
    limit = int(memory_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    import torch

    x, y = make_inputs(loss, n, d, rows_kind == "clustered")
    base = {"loss": loss, "provider": provider, "n": n, "d": d, "rows_kind": rows_kind}
    rows = []
    fn = loss_fn(loss, provider)
    leaves = [t for t in (x, y) if t.requires_grad]
    if provider.startswith("fastloss-"):  # no compilation: warm up at a small size
        small = (x[:256].detach().requires_grad_(), y[:256].detach().requires_grad_(y.requires_grad))
        fn(*small).sum().backward()
    try:
        verdict = check(loss, fn, x, y, n)
        for mode in modes:
            row = dict(base, mode=mode, error_rel=verdict["error_rel"], ok=verdict["ok"], reference=verdict["reference"])
            if mode == "train":
                def step():
                    for t in leaves:
                        t.grad = None
                    fn(x, y).backward()
                row.update(_timed_steps(step))
                if provider == "torch-compile":
                    row["compile_seconds"] = max(0.0, verdict["first_call"] - row["seconds"])
            elif mode == "forward":
                def step():
                    with torch.no_grad():
                        fn(x, y)
                if provider == "torch-compile":  # the no-grad graph is compiled apart
                    t0 = time.perf_counter()
                    step()
                    first = time.perf_counter() - t0
                row.update(_timed_steps(step))
                if provider == "torch-compile":
                    row["compile_seconds"] = max(0.0, first - row["seconds"])
            else:
                if provider.startswith("fastloss-") and loss in MARGIN_LOSSES:
                    rows.append(dict(row, skipped=FUSED))
                    continue
                if provider == "torch-compile":  # compiled again: its donated buffers forbid retain_graph
                    torch._dynamo.reset()
                    import torch._functorch.config
                    torch._functorch.config.donated_buffer = False
                    fn = loss_fn(loss, provider)
                graph = fn(x, y)
                torch.autograd.grad(graph, leaves, retain_graph=True)  # warm-up
                row.update(_timed_steps(lambda: torch.autograd.grad(graph, leaves, retain_graph=True)))
                del graph
            row["flops"] = flops(loss, n, d, mode)
            rows.append(row)
    except (MemoryError, RuntimeError) as exc:
        if "memory" not in str(exc).lower() and not isinstance(exc, MemoryError):
            raise
        done = {r["mode"] for r in rows}
        rows += [dict(base, mode=m, error=f"out of memory (over {memory_gib:g} GiB)") for m in modes if m not in done]
    return rows


def matmul_ceiling(d: int) -> float:
    """float32 FLOP/s of 4096 x d by d x 4096 products, all threads, the best of several."""
    import torch

    a, b = torch.randn(4096, d), torch.randn(d, 4096)
    out = torch.empty(4096, 4096)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * 4096 * 4096 * d / best


def run_case(loss: str, provider: str, n: int, d: int, rows_kind: str, modes: list[str],
             memory_gib: float, timeout: int) -> list[dict]:
    """child() in a fresh process."""
    spec = json.dumps([loss, provider, n, d, rows_kind, modes, memory_gib])
    base = {"loss": loss, "provider": provider, "n": n, "d": d, "rows_kind": rows_kind}
    try:
        # fastloss's output cache off: its outputs are fresh memory, as every other provider's are
        env = dict(os.environ, FASTLOSS_OUTPUT_CACHE_MB="0")
        out = subprocess.run([sys.executable, __file__, "--child", spec], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return [dict(base, mode=m, error=f"over {timeout} s") for m in modes]
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        killed = out.returncode < 0 or "memory" in out.stderr.lower()
        why = f"out of memory (over {memory_gib:g} GiB)" if killed else (out.stderr.strip().splitlines() or ["?"])[-1]
        return [dict(base, mode=m, error=why) for m in modes]
    return json.loads(lines[-1])


def plan(losses: list[str], sizes: list[int], dims: list[int], providers: list[str]) -> list[tuple]:
    """(loss, provider, n, d, rows_kind) of every case, in running order."""
    cases = []
    for d in dims:
        for loss in losses:
            for n in sizes:
                for provider in (p for p in PROVIDERS_OF[loss] if p in providers):
                    cases.append((loss, provider, n, d, "gaussian"))
                if loss in MARGIN_LOSSES and d == 128 and n in CLUSTERED_SIZES and "fastloss-cpu" in providers:
                    cases.append((loss, "fastloss-cpu", n, d, "clustered"))
    return cases


def measure(cases: list[tuple], modes: list[str], memory_gib: float, timeout: int, progress=None) -> dict:
    """Every case in its own process (a provider that ran out is not run at larger N), and the
    matrix-product ceilings before and after (the better kept)."""
    dims = sorted({case[3] for case in cases})
    ceilings = {d: matmul_ceiling(d) for d in dims}
    rows, failed = [], set()
    for loss, provider, n, d, kind in cases:
        if progress:
            progress.set_description(f"in-batch {loss} N={n} D={d} {provider}{' clustered' if kind != 'gaussian' else ''}")
        key = (loss, provider, d, kind)
        case_modes = ["train"] if kind == "clustered" else modes
        if key in failed:
            rows += [{"loss": loss, "provider": provider, "n": n, "d": d, "rows_kind": kind, "mode": m,
                      "error": "not run (ran out at a smaller N)"} for m in case_modes]
        else:
            result = run_case(loss, provider, n, d, kind, case_modes, memory_gib, timeout)
            rows += result
            if any("error" in r for r in result):
                failed.add(key)
        if progress:
            progress.update(1)
    for d in dims:
        ceilings[d] = max(ceilings[d], matmul_ceiling(d))
    for r in rows:
        if "seconds" in r:
            r["gflops"] = r["flops"] / r["seconds"] / 1e9
            r["pct_of_ceiling"] = 100 * r["flops"] / r["seconds"] / ceilings[r["d"]]
    return {"ceilings": {str(d): c for d, c in ceilings.items()}, "memory_limit_gib": memory_gib, "rows": rows}


def _ratio(rows_by_key: dict, row: dict, other: str) -> str:
    o = rows_by_key.get((row["loss"], row["n"], row["d"], row["rows_kind"], row["mode"], other))
    if not o or "seconds" not in o or not o.get("ok") or not row.get("ok"):
        return "-"
    return f"{o['seconds'] / row['seconds']:.1f}x"


def tables(result: dict) -> str:
    """Markdown: one table per loss."""
    rows = result["rows"]
    index = {(r["loss"], r["n"], r["d"], r["rows_kind"], r["mode"], r["provider"]): r for r in rows}
    out = []
    for loss in dict.fromkeys(r["loss"] for r in rows):
        out += [f"#### {loss}", "",
                "| N | D | rows | mode | provider | time (s), median [min-max] | peak extra memory | "
                "GFLOP/s | % of matmul | check vs float64 | vs pml | vs eager | vs compile |",
                "|---:|---:|---|---|---|---|---:|---:|---:|---|---:|---:|---:|"]
        for r in (r for r in rows if r["loss"] == loss):
            head = f"| {r['n']} | {r['d']} | {r['rows_kind']} | {r['mode']} | {r['provider']} |"
            if "error" in r or "skipped" in r:
                out.append(f"{head} {r.get('error') or r['skipped']} | | | | | | | |")
                continue
            check = f"ok ({r['error_rel']:.0e})" if r["ok"] else f"**DISAGREES** ({r['error_rel']:.0e})"
            compile_note = f" +{r['compile_seconds']:.1f} s compile" if r.get("compile_seconds") else ""
            out.append(f"{head} {r['seconds']:.3f} [{r['min']:.3f}-{r['max']:.3f}]{compile_note} | "
                       f"{r['peak_extra_bytes'] / 2**20:,.0f} MiB | {r['gflops']:.1f} | {r['pct_of_ceiling']:.0f}% | "
                       f"{check} | {_ratio(index, r, 'pml')} | {_ratio(index, r, 'torch-eager')} | "
                       f"{_ratio(index, r, 'torch-compile')} |")
        out.append("")
    ceilings = ", ".join(f"D={d}: {c / 1e9:.0f} GFLOP/s" for d, c in result["ceilings"].items())
    out.append("GFLOP/s: the products of a materialised pass (2 R C D forward, 6 R C D forward+backward, 4 R C D "
               "backward, R x C the similarity matrix: N x N, 2N x 2N for NT-Xent with N per view) per second. "
               f"% of matmul: against float32 4096 x D by D x 4096 products in the same run ({ceilings}). "
               "vs pml / vs eager / vs compile: their time over this row's (eager and compile: the materialised "
               "formula); never against a provider whose check failed. Peak extra memory: the process's peak "
               "resident memory during a step minus before it (inputs excluded; each case in its own process, "
               "fastloss's output cache off, "
               f"which may allocate {result['memory_limit_gib']:g} GiB). Check: against float64 as for the "
               "memory-bound losses (the materialised formula up to N = "
               f"{CHECK_FORMULA_MAX}, fastloss's float64 kernel above).")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1024,4096,16384,32768")
    parser.add_argument("--dims", default="128")
    parser.add_argument("--losses", default=",".join(LOSSES))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    parser.add_argument("--memory-gib", type=float, default=12.0, help="per process, default 12")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per case")
    parser.add_argument("--out", default=str(HERE / "out"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return
    losses, providers, modes = args.losses.split(","), args.providers.split(","), args.modes.split(",")
    unknown = [v for v in losses if v not in LOSSES] + [v for v in providers if v not in PROVIDERS] + \
        [v for v in modes if v not in MODES]
    if unknown:
        parser.error(f"unknown {', '.join(unknown)}; losses: {', '.join(LOSSES)}; providers: "
                     f"{', '.join(PROVIDERS)}; modes: {', '.join(MODES)}")
    import machine

    cases = plan(losses, [int(v) for v in args.sizes.split(",")], [int(v) for v in args.dims.split(",")], providers)
    result = measure(cases, modes, args.memory_gib, args.timeout)
    meta = machine.metadata("cpu")
    markdown = f"## In-batch losses, float32 — {machine.describe(meta)}\n\n{tables(result)}\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "batch-report-cpu.json").write_text(json.dumps({"meta": meta, "in_batch": result}, indent=1))
    (out / "batch-report-cpu.md").write_text(markdown)
    print(markdown)
    print(f"(written to {out}/batch-report-cpu.md and .json)")


if __name__ == "__main__":
    main()
