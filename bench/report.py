"""The fastloss benchmark report: every loss in every mode, fastloss against torch eager,
torch.compile and the installed peers, each result checked against float64 first and set
against a ceiling measured in the same run.

    python bench/report.py [--quick | --plan rows-cpu] [--parts memory-bound,in-batch] [--out DIR | --refresh-results]
                           [--losses mse,bce] [--batch-losses info_nce] [--memory-gib 12]

Two parts. The memory-bound losses (pointwise, masked MSE, pair and triplet): each (loss, size,
dtype, mode) times its providers and a copy moving as many bytes side by side, on CPU in
interleaved rounds, on a GPU by CUDA events; the copy's bandwidth is the ceiling. Every input is
rotated over copies that together exceed twice the last-level cache (on a GPU the L2 is cleared
before each call), so no provider finds its inputs in cache. On CPU they run in two allocator
regimes, each in its own process: the default allocator (glibc returns large blocks to the OS, so
every fresh output pays page faults on first touch) and a caching allocator (tcmalloc preloaded
when installed, else glibc's own tunables keeping freed memory), which compares the kernels
themselves. The in-batch losses (bench/batch_report.py): each case in a fresh process, time and
peak memory, against a matrix product of the same width.

Output: a table per loss on the terminal; under --out (default bench/out/<cpu|gpu>, ignored by
git) report.json (every row, the machine, versions, commit and regimes), report.md and PNG plots.
--refresh-results writes to bench/results/<cpu|gpu> instead: the results committed with the code.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

COPY = "copy"  # the step name of the ceiling timed with every group
TCMALLOC_CANDIDATES = [
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
]
# glibc without a package: no mmap for big blocks and no trimming, so freed memory stays mapped
GLIBC_CACHING = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"
REGIMES = {
    "default": "default allocator: fresh outputs pay page faults (glibc returns big blocks to the OS)",
    "caching": "caching allocator: the kernels themselves",
    "gpu": "torch's CUDA caching allocator",
}
POINTWISE = ("mse", "l1", "smooth_l1", "huber", "bce", "masked_mse")
ROWS = ("contrastive", "contrastive_manhattan", "contrastive_cosine", "triplet", "cosine_embedding")

# What each run measures: per device, the sizes by dtype (elements; (rows, D) for the row losses)
PLANS = {
    "full-cpu": {"losses": POINTWISE + ROWS, "modes": ("forward", "train", "backward"),
                 "sizes": {"float32": [2**20, 2**22, 2**25], "bfloat16": [2**25]},
                 "row_shapes": {"float32": [(4096, 128), (65536, 256), (65536, 512)], "bfloat16": [(65536, 256)]},
                 # the caching regime: float32 forward and training
                 "caching": {"dtypes": ("float32",), "modes": ("forward", "train")},
                 "batch": {"losses": ("batch_contrastive", "batch_hard_triplet", "info_nce", "clip", "nt_xent"),
                           "sizes": (1024, 4096, 16384, 32768), "dims": (128,)},
                 "minutes": 30},
    "quick-cpu": {"losses": ("mse", "bce", "masked_mse", "contrastive", "triplet", "cosine_embedding"),
                  "modes": ("forward", "train", "backward"),
                  "sizes": {"float32": [2**22], "bfloat16": [2**22]},
                  "row_shapes": {"float32": [(65536, 256)], "bfloat16": [(65536, 256)]},
                  "caching": None,  # one regime: the caching one
                  "bfloat16_modes": ("train",),
                  "batch": {"losses": ("batch_contrastive", "batch_hard_triplet", "info_nce"), "sizes": (4096,),
                            "dims": (128,)},
                  "minutes": 3},
    # The row losses where their kernels must reach the copy's speed: training, the caching regime
    "rows-cpu": {"losses": ROWS, "modes": ("train",), "sizes": {},
                 "row_shapes": {"float32": [(65536, 256), (65536, 512)]},
                 "caching": None, "batch": None, "minutes": 3},
    "full-cuda": {"losses": POINTWISE + ROWS, "modes": ("forward", "train", "backward"),
                  "sizes": {"float32": [2**22, 2**25, 2**28], "bfloat16": [2**28]},
                  "row_shapes": {"float32": [(4096, 128), (65536, 256), (1048576, 256)],
                                 "bfloat16": [(1048576, 256)]},
                  "batch": None, "minutes": 5},
    "quick-cuda": {"losses": ("mse", "bce", "masked_mse", "contrastive", "cosine_embedding"),
                   "modes": ("forward", "train", "backward"),
                   "sizes": {"float32": [2**25], "bfloat16": [2**25]},
                   "row_shapes": {"float32": [(65536, 256)], "bfloat16": [(65536, 256)]},
                   "bfloat16_modes": ("train",), "batch": None, "minutes": 2},
}


def groups(plan: dict, regime: str, losses: list[str]) -> list[tuple]:
    """(loss, size, dtype, mode) of a regime, forward first and backward last (it recompiles)."""
    caching = plan.get("caching")
    only = caching if regime == "caching" and caching else {}
    found = []
    for mode in plan["modes"]:
        if mode not in only.get("modes", plan["modes"]):
            continue
        for dtype in ("float32", "bfloat16"):
            if dtype not in only.get("dtypes", ("float32", "bfloat16")):
                continue
            if dtype == "bfloat16" and mode not in plan.get("bfloat16_modes", plan["modes"]):
                continue
            for loss in (v for v in plan["losses"] if v in losses):
                sizes = plan["row_shapes" if loss in ROWS else "sizes"].get(dtype, [])
                found += [(loss, size, dtype, mode) for size in sizes]
    return found


def measure_group(device: str, providers: list, group: tuple, rotate_bytes: int) -> list[dict]:
    """One (loss, size, dtype, mode): every provider checked against float64, then timed beside a
    copy moving as many bytes."""
    import torch

    import cases
    import honesty
    from timing import time_cpu_interleaved, time_gpu

    loss, size, dtype_name, mode = group
    dtype = getattr(torch, dtype_name)
    case = cases.make_case(loss, size, dtype, device, rotate_bytes)
    nbytes = case.nbytes(mode)
    base = {"loss": loss, "size": case.size, "n": case.n, "dtype": dtype_name, "mode": mode, "bytes": nbytes}
    expected = honesty.reference(cases.TORCH_FN[loss], case.sets[0], case.kwargs)
    if mode == "forward":
        expected = (expected[0], [])
    rows, steps = [], {}
    for provider in providers:
        row = dict(base, provider=provider.name)
        if mode == "backward" and provider.fused_backward:
            rows.append(dict(row, skipped=cases.FUSED_BACKWARD))
            continue
        fn = provider.fn(loss)
        t0 = time.perf_counter()
        got = honesty.evaluate(fn, case.sets[0], case.kwargs, with_grads=mode != "forward")
        if device == "cuda":
            torch.cuda.synchronize()
        row["first_call"] = time.perf_counter() - t0
        row["error_rel"] = honesty.relative_error(got, expected)
        row["ok"] = honesty.agrees(row["error_rel"], dtype)
        del got
        steps[provider.name] = provider.step(case, mode)
        rows.append(row)
    copy, copy_bytes = cases.copy_step(nbytes, device, rotate_bytes)
    if device == "cuda":
        sync = torch.cuda.synchronize
        timed = time_gpu({COPY: copy, **steps})
    else:
        sync = None
        timed = time_cpu_interleaved({COPY: copy, **steps})
    copy_gbps = copy_bytes / timed.pop(COPY)["seconds"] / 1e9
    for row in rows:
        if row["provider"] not in timed:
            continue
        row.update(timed[row["provider"]])
        row["gbps"] = nbytes / row["seconds"] / 1e9
        row["ceiling_gbps"] = copy_gbps
        row["pct_of_ceiling"] = 100 * row["gbps"] / copy_gbps
        if row["provider"] == "torch-compile" and row["first_call"] > 3 * row["seconds"] + 0.1:
            row["compile_seconds"] = row["first_call"] - row["seconds"]
        if sync:  # the step's peak memory beyond what was allocated before it
            sync()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            steps[row["provider"]]()
            sync()
            row["peak_extra_bytes"] = torch.cuda.max_memory_allocated() - before
    return rows


def measure_regime(device: str, plan: dict, regime: str, losses: list[str]) -> dict:
    """Every group of the regime, in this process."""
    import torch

    import cases
    import machine
    import progress

    providers = cases.providers(device)
    rotate = 2 * machine.last_level_cache_bytes() if device == "cpu" else 0
    todo = groups(plan, regime, losses)
    rows = []
    in_backward = False
    with progress.bar(len(todo)) as bar:
        for group in todo:
            loss, size, dtype, mode = group
            bar.set_description(f"[{regime}] {loss} {cases.size_label(size)} {dtype} {mode}")
            if mode == "backward" and not in_backward:  # compiled again: donated buffers forbid retain_graph
                torch._dynamo.reset()
                import torch._functorch.config
                torch._functorch.config.donated_buffer = False
                in_backward = True
            rows += measure_group(device, providers, group, rotate)
            bar.update(1)
    return {"regime": regime, "description": REGIMES[regime], "rows": rows}


def caching_allocator_env() -> tuple[dict, str]:
    """The environment of the caching regime and what it uses."""
    tcmalloc = next((p for p in TCMALLOC_CANDIDATES if Path(p).exists()), None)
    if tcmalloc:
        return {"LD_PRELOAD": tcmalloc}, f"tcmalloc ({tcmalloc}) preloaded"
    return {"GLIBC_TUNABLES": GLIBC_CACHING}, f"glibc tunables {GLIBC_CACHING} (tcmalloc not installed)"


def run_regime(regime: str, args: argparse.Namespace, env_extra: dict) -> dict:
    """measure_regime in a child process (its progress bar on this terminal)."""
    env = dict(os.environ, **env_extra)
    command = [sys.executable, __file__, "--child", regime, "--plan", args.plan, "--losses", args.losses]
    out = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise SystemExit(f"report: the {regime} regime failed (exit {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="a representative subset (about 3 min on 2 CPU cores)")
    parser.add_argument("--parts", default="memory-bound,in-batch", help="memory-bound, in-batch or both")
    parser.add_argument("--losses", default=None, help="memory-bound losses to run (default: the plan's)")
    parser.add_argument("--batch-losses", default=None, help="in-batch losses to run (default: the plan's)")
    parser.add_argument("--memory-gib", type=float, default=12.0,
                        help="in-batch: memory each case's process may allocate (default 12)")
    parser.add_argument("--out", default=None, help="output folder (default bench/out/<cpu|gpu>)")
    parser.add_argument("--refresh-results", action="store_true",
                        help="write to bench/results/<cpu|gpu>, the committed results")
    parser.add_argument("--render", metavar="REPORT_JSON", default=None,
                        help="write report.md and the plots again from a saved report.json, next to it")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--plan", default=None,
                        help="a plan by name instead: full-cpu, quick-cpu, rows-cpu (the row losses, training, "
                             "65536 rows of 256 and 512, caching allocator: about 3 min), full-cuda, quick-cuda")
    args = parser.parse_args()

    if args.render:
        saved = Path(args.render)
        write_outputs(json.loads(saved.read_text()), saved.parent, rewrite_json=False)
        return
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    args.plan = args.plan or f"{'quick' if args.quick else 'full'}-{device}"
    if args.plan not in PLANS:
        parser.error(f"unknown plan {args.plan}; known: {', '.join(PLANS)}")
    plan = PLANS[args.plan]
    args.losses = args.losses or ",".join(plan["losses"])
    import cases

    unknown = [v for v in args.losses.split(",") if v not in cases.LOSSES]
    if unknown:
        parser.error(f"unknown loss {', '.join(unknown)}; known: {', '.join(cases.LOSSES)}")
    if args.child:  # one regime in this process; its JSON goes last on stdout
        print(json.dumps(measure_regime(device, plan, args.child, args.losses.split(","))))
        return

    import batch_report
    import machine

    parts = args.parts.split(",")
    if any(p not in ("memory-bound", "in-batch") for p in parts):
        parser.error("--parts takes memory-bound, in-batch or both, comma-separated")
    tag = "gpu" if device == "cuda" else "cpu"
    out = Path(args.out) if args.out else HERE / ("results" if args.refresh_results else "out") / tag
    meta = machine.metadata(device)
    print(f"fastloss benchmark report: the {args.plan.split('-')[0]} plan on {machine.describe(meta)}; "
          f"about {plan['minutes']} min on a 2-core CPU. Results go to {out}/.", flush=True)
    meta["plan"] = args.plan
    report: dict = {"meta": meta}
    started = time.perf_counter()
    if "memory-bound" in parts:
        regimes = []
        if device == "cuda":
            regimes.append(measure_regime(device, plan, "gpu", args.losses.split(",")))
        else:
            env, allocator = caching_allocator_env()
            meta["caching_allocator"] = allocator
            if plan.get("caching") is not None:
                regimes.append(run_regime("default", args, {}))
            if "LD_PRELOAD" not in env:
                print("note: the caching regime uses glibc's tunables; for tcmalloc, as the committed results, "
                      "install libtcmalloc-minimal4 (Debian/Ubuntu: apt-get install libtcmalloc-minimal4)",
                      file=sys.stderr)
            regimes.append(run_regime("caching", args, env))
            for r in regimes:
                if r["regime"] == "caching":
                    r["description"] += f" ({allocator})"
        report["memory_bound"] = {"regimes": regimes}
    batch_plan = plan.get("batch")
    if "in-batch" in parts and batch_plan and device == "cpu":
        import progress

        losses = args.batch_losses.split(",") if args.batch_losses else list(batch_plan["losses"])
        todo = batch_report.plan(losses, list(batch_plan["sizes"]), list(batch_plan["dims"]),
                                 list(batch_report.PROVIDERS))
        with progress.bar(len(todo)) as bar:
            report["in_batch"] = batch_report.measure(todo, list(batch_report.MODES), args.memory_gib, 600, bar)
    meta["minutes"] = round((time.perf_counter() - started) / 60, 1)

    write_outputs(report, out)


def write_outputs(report: dict, out: Path, rewrite_json: bool = True) -> None:
    """report.json, report.md and the plots into `out`; the Markdown printed."""
    import tables

    text = tables.markdown(report)
    out.mkdir(parents=True, exist_ok=True)
    if rewrite_json:
        (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(text)
    try:
        import plots
    except ImportError as exc:  # the tables and JSON stand without the plots
        print(f"note: no plots ({exc}; pip install matplotlib)", file=sys.stderr)
        written = []
    else:
        written = plots.write_plots(report, out)
    print()
    print(text)
    print(f"(written to {out}/: report.md, report.json, {', '.join(p.name for p in written)}"
          f"{'; ' + str(report['meta'].get('minutes')) + ' min' if report['meta'].get('minutes') else ''})")


if __name__ == "__main__":
    main()
