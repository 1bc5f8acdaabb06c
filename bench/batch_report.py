"""The in-batch losses' report: forward+backward time and peak extra memory of fastloss's tiled
kernels against pytorch-metric-learning and a materialised torch formula (eager and under
torch.compile), and fastloss's effective FLOP/s against a matrix product measured in the same run.

    python bench/batch_report.py [--sizes 1024,4096,16384,32768,65536] [--dims 128,512] [--losses ...]
                                 [--out DIR] [--name STEM]

The embeddings are Gaussian rows (far apart after normalisation: few negative pairs within
neg_margin = 1, and with N / 16 labels few positive pairs, so most coefficient tiles are zeros
and fastloss skips their products) and, for fastloss, also "clustered" rows (1 + 0.3 x Gaussian:
every negative pair within the margin, the dense case) at D = 128. Every (loss, N, D, provider)
runs in a fresh process (peak memory is per process): one warm-up
step (compilation included, its time reported apart), then timed steps; the peak extra memory
is the process's peak resident memory during a timed step minus its resident memory before it
(Linux: VmHWM reset through /proc/self/clear_refs). A provider that runs out of memory (each
process may allocate at most --memory-gib) or time is reported so, and not run at larger N.
Effective FLOP/s counts the three products a materialised forward+backward needs, 3 * 2 * R * C * D
for an R x C matrix (N x N; B x B for InfoNCE and CLIP; 2B x 2B for NT-Xent, N = B per view);
fastloss's tiled softmax losses do four (the backward recomputes the logits), so 75% of the
ceiling is their limit. The ceiling is float32 matrix products of 4096 x D by D x 4096
(compute-bound, the same D) timed in the same run.

The softmax losses (info_nce, clip: symmetric InfoNCE, nt_xent on two views of N rows) take unit
Gaussian rows, temperature 0.07 (0.5 for NT-Xent); the materialised formula is fastloss.reference's
(F.cross_entropy on the logits), pytorch-metric-learning's NTXentLoss the peer for NT-Xent.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARGIN_LOSSES = ("batch_contrastive", "batch_hard_triplet")
SOFTMAX_LOSSES = ("info_nce", "clip", "nt_xent")
LOSSES = MARGIN_LOSSES + SOFTMAX_LOSSES
PROVIDERS = ("fastloss-cpu", "pml", "torch-eager", "torch-compile")
# who runs each loss: pml has no InfoNCE with a separate key set; the margin losses' materialised
# formula is kept to torch.compile (its eager form is slower still)
PROVIDERS_OF = {"batch_contrastive": ("fastloss-cpu", "pml", "torch-compile"),
                "batch_hard_triplet": ("fastloss-cpu", "pml", "torch-compile"),
                "info_nce": ("fastloss-cpu", "torch-eager", "torch-compile"),
                "clip": ("fastloss-cpu", "torch-eager", "torch-compile"),
                "nt_xent": ("fastloss-cpu", "pml", "torch-eager", "torch-compile")}
CLUSTERED = ", clustered rows"
CLUSTERED_SIZES = (4096, 16384)  # at D = 128
SAMPLES_PER_CLASS = 16  # labels: N / 16 classes, as a P x K sampler gives


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _softmax_step(loss: str, provider: str, x, k):
    import torch

    import fastloss
    from fastloss import reference

    if provider == "pml":  # NT-Xent: the two views as one batch, each pair sharing a label
        from pytorch_metric_learning import losses

        peer, labels = losses.NTXentLoss(temperature=0.5), torch.arange(x.shape[0]).repeat(2)
        return lambda: peer(torch.cat([x, k]), labels).backward()
    if provider == "fastloss-cpu":
        if loss == "nt_xent":
            return lambda: fastloss.nt_xent_loss(x, k, 0.5, backend="cpu").backward()
        return lambda: fastloss.info_nce_loss(x, k, 0.07, symmetric=loss == "clip", normalize=True,
                                              backend="cpu").backward()
    if loss == "nt_xent":
        formula = lambda a, b: reference.nt_xent_loss(a, b, 0.5)  # noqa: E731
    else:
        formula = lambda a, b: reference.info_nce_loss(a, b, 0.07, loss == "clip", True)  # noqa: E731
    formula = torch.compile(formula) if provider == "torch-compile" else formula
    return lambda: formula(x, k).backward()


def _step(loss: str, provider: str, x, y):
    import torch

    import fastloss
    from fastloss import reference

    if loss in SOFTMAX_LOSSES:
        return _softmax_step(loss, provider, x, y)
    if provider == "fastloss-cpu":
        fn = fastloss.batch_contrastive_loss if loss == "batch_contrastive" else fastloss.batch_hard_triplet_loss
        return lambda: fn(x, y, backend="cpu").backward()
    if provider == "torch-compile":
        formula = reference.batch_contrastive_loss if loss == "batch_contrastive" else reference.batch_hard_triplet_loss
        compiled = torch.compile(formula)
        return lambda: compiled(x, y).backward()
    from pytorch_metric_learning import losses, miners

    if loss == "batch_contrastive":
        peer = losses.ContrastiveLoss()
        return lambda: peer(x, y).backward()
    miner, peer = miners.BatchHardMiner(), losses.TripletMarginLoss(margin=0.05)
    return lambda: peer(x, y, miner(x, y)).backward()


def child(loss: str, provider: str, n: int, d: int, memory_gib: float) -> dict:
    """One case in this process: the JSON result is the last line on stdout."""
    limit = int(memory_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    import torch

    torch.manual_seed(0)
    clustered = provider.endswith(CLUSTERED)
    x = (1.0 + 0.3 * torch.randn(n, d) if clustered else torch.randn(n, d)).requires_grad_()
    if loss in SOFTMAX_LOSSES:  # y: the keys (the second view)
        y = torch.randn(n, d).requires_grad_()
    else:
        y = torch.randint(0, max(1, n // SAMPLES_PER_CLASS), (n,))
    result = {"loss": loss, "provider": provider, "n": n, "d": d}
    provider = provider.removesuffix(CLUSTERED)
    try:
        step = _step(loss, provider, x, y)
        if provider == "fastloss-cpu":  # no compilation: warm up at a small size
            small = y[:256].detach().requires_grad_(y.requires_grad)
            _step(loss, provider, x[:256].detach().requires_grad_(), small)()
            warm = 0.0
        else:
            t0 = time.perf_counter()
            step()
            warm = time.perf_counter() - t0
        times, peaks = [], []
        while len(times) < 3 and (not times or sum(times) < 4.0):
            x.grad = y.grad = None
            base = _rss("VmRSS:")
            Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
            peaks.append(_rss("VmHWM:") - base)
        result.update(seconds=statistics.median(times), peak_extra_bytes=max(peaks), steps=len(times))
        if provider == "torch-compile":
            result["compile_seconds"] = max(0.0, warm - result["seconds"])
    except (MemoryError, RuntimeError) as exc:
        if "memory" not in str(exc).lower() and not isinstance(exc, MemoryError):
            raise
        result["error"] = f"out of memory (over {memory_gib:g} GiB)"
    return result


def matmul_ceiling(d: int) -> float:
    """float32 FLOP/s of 4096 x d by d x 4096 products, all threads, the best of several."""
    import torch

    a, b = torch.randn(4096, d), torch.randn(d, 4096)
    out = torch.empty(4096, 4096)
    torch.mm(a, b, out=out)
    best = min(_timed(lambda: torch.mm(a, b, out=out)) for _ in range(5))
    return 2 * 4096 * 4096 * d / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(loss: str, provider: str, n: int, d: int, args) -> dict:
    command = [sys.executable, __file__, "--child", f"{loss}|{provider}|{n}|{d}", "--memory-gib", str(args.memory_gib)]
    try:
        out = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"loss": loss, "provider": provider, "n": n, "d": d, "error": f"over {args.timeout} s"}
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        killed = out.returncode < 0 or "memory" in out.stderr.lower()
        why = f"out of memory (over {args.memory_gib:g} GiB)" if killed else out.stderr.strip().splitlines()[-1]
        return {"loss": loss, "provider": provider, "n": n, "d": d, "error": why}
    return json.loads(lines[-1])


def table(rows: list[dict], ceilings: dict) -> str:
    lines = ["| loss | N | D | provider | time (s) | peak extra memory | effective GFLOP/s | % of matmul | "
             "vs pml | vs eager | vs compile |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    index = {(r["loss"], r["n"], r["d"], r["provider"]): r for r in rows}
    for r in rows:
        key = (r["loss"], r["n"], r["d"])
        if "error" in r:
            lines.append(f"| {r['loss']} | {r['n']} | {r['d']} | {r['provider']} | {r['error']} | | | | | | |")
            continue
        side = 2 * r["n"] if r["loss"] == "nt_xent" else r["n"]
        flops = 6 * side * side * r["d"] / r["seconds"]

        def ratio(other):
            o = index.get((*key, other))
            return f"{o['seconds'] / r['seconds']:.1f}x" if o and "error" not in o else "-"

        mib = r["peak_extra_bytes"] / 2**20
        compile_note = f" (+{r['compile_seconds']:.1f} s compile)" if r.get("compile_seconds") else ""
        lines.append(f"| {r['loss']} | {r['n']} | {r['d']} | {r['provider']} | {r['seconds']:.3f}{compile_note} | "
                     f"{mib:,.0f} MiB | {flops / 1e9:.1f} | {100 * flops / ceilings[r['d']]:.0f}% | "
                     f"{ratio('pml')} | {ratio('torch-eager')} | {ratio('torch-compile')} |")
    lines += ["", "Effective GFLOP/s: 3 * 2 * R * C * D per forward+backward for the R x C matrix (N x N; 2N x 2N "
              "for NT-Xent, N per view). % of matmul: against float32 4096 x D by D x 4096 products in the same "
              "run (" + ", ".join(f"D={d}: {c / 1e9:.0f} GFLOP/s" for d, c in ceilings.items()) + "). vs pml / "
              "vs eager / vs compile: their time over this row's (eager and compile: the materialised formula). "
              "Peak extra memory: the process's peak resident memory during a step minus before it (inputs "
              "excluded; each case in its own process)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1024,4096,16384,32768,65536")
    parser.add_argument("--dims", default="128,512")
    parser.add_argument("--losses", default=",".join(LOSSES))
    parser.add_argument("--max-nt-xent", type=int, default=65536, help="largest N (per view) for nt_xent")
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    parser.add_argument("--memory-gib", type=float, default=20.0, help="per process, default 20")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per case")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(HERE / "results"))
    parser.add_argument("--name", default="batch-report-cpu", help="the result files' stem")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        loss, provider, n, d = args.child.split("|")
        print(json.dumps(child(loss, provider, int(n), int(d), args.memory_gib)))
        return

    import torch

    import fastloss

    sizes = [int(v) for v in args.sizes.split(",")]
    dims = [int(v) for v in args.dims.split(",")]
    losses, providers = args.losses.split(","), args.providers.split(",")
    unknown = [v for v in losses if v not in LOSSES] + [v for v in providers if v not in PROVIDERS]
    if unknown:
        parser.error(f"unknown {', '.join(unknown)}; losses: {', '.join(LOSSES)}; providers: {', '.join(PROVIDERS)}")
    ceilings = {d: matmul_ceiling(d) for d in dims}
    rows = []
    for d in dims:
        for loss in losses:
            failed: set[str] = set()
            for n in sizes:
                extra = [f"fastloss-cpu{CLUSTERED}"] if d == 128 and n in CLUSTERED_SIZES and \
                    "fastloss-cpu" in providers else []
                if loss in SOFTMAX_LOSSES:
                    extra = []
                if loss == "nt_xent" and n > args.max_nt_xent:
                    continue
                for provider in [p for p in providers if p in PROVIDERS_OF[loss]] + extra:
                    if provider in failed:
                        rows.append({"loss": loss, "provider": provider, "n": n, "d": d,
                                     "error": "not run (ran out at a smaller N)"})
                        continue
                    row = run(loss, provider, n, d, args)
                    rows.append(row)
                    if "error" in row:
                        failed.add(provider)
                    shown = row.get("error") or f"{row['seconds']:.3f} s, {row['peak_extra_bytes'] / 2**20:,.0f} MiB"
                    print(f"  {loss:18s} N={n:6d} D={d:4d} {provider:14s} {shown}", flush=True)
    for d in dims:  # the ceiling once more, after the cases: the better of the two
        ceilings[d] = max(ceilings[d], matmul_ceiling(d))
    sys.path.insert(0, str(HERE))
    from report import cpu_name

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    meta = {"machine": cpu_name(), "torch": torch.__version__, "fastloss": fastloss.__version__, "commit": commit,
            "threads": torch.get_num_threads(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    markdown = (f"## In-batch losses, forward+backward, float32 — {meta['machine']} — torch {meta['torch']}, "
                f"{meta['threads']} threads, commit {commit}, {meta['date']}\n\n{table(rows, ceilings)}\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "ceilings": ceilings, "rows": rows}, indent=1))
    (out / f"{args.name}.md").write_text(markdown)
    print()
    print(markdown)
    print(f"(written to {out}/{args.name}.md and .json)")


if __name__ == "__main__":
    main()
