"""The benchmark report: each loss's forward+backward, fastloss vs torch eager vs
torch.compile, with the copy bandwidth measured in the same run as the ceiling.

    python bench/report.py [--sizes 18,22,25] [--row-shapes 65536x256] [--losses mse,bce] [--out DIR]

Each loss's providers and a device copy moving as many bytes are timed side by side (on CPU in
interleaved rounds), and that copy's bandwidth is the loss's ceiling. On CPU the cases run
twice, each in its own process: with the default allocator (glibc hands large blocks back to
the OS, so every freshly allocated output pays page faults on first touch) and with a caching
allocator (libtcmalloc-minimal4 preloaded), which compares the kernels themselves. On a GPU
the caching allocator is torch's own: one regime. Results go to --out (default: $OUT if set,
else bench/results/) as JSON and Markdown; the table prints last.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TCMALLOC_CANDIDATES = [
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
]
REGIMES = {
    "default": "default allocator: fresh outputs pay page faults (glibc returns big blocks to the OS)",
    "tcmalloc": "caching allocator (libtcmalloc-minimal4 preloaded): the kernels themselves",
    "gpu": "torch's CUDA caching allocator",
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or 'CPU'}, {os.cpu_count()} cores"


COPY = "copy"  # the step name of the copy timed with every loss


def time_cpu_interleaved(steps: dict, min_time: float = 1.5, min_rounds: int = 7,
                         max_rounds: int = 60) -> dict:
    """Median seconds of each step, timed in rounds (every step once per round, the order
    rotating): a shared machine's bandwidth drifts by tens of percent within seconds, and
    interleaving gives every step, the copy included, the same conditions. Each timed call
    follows an untimed call of the same step, as a training loop runs its steps back to back:
    on the 2-core dev VM the first call after another workload or an idle moment ran up to 1.5x
    slower (a 13 ms step took 19 ms after a 50 ms sleep)."""
    names = list(steps)
    for name in names:
        steps[name](); steps[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or (time.perf_counter() - start < min_time and rounds < max_rounds):
        for k in range(len(names)):
            name = names[(k + rounds) % len(names)]
            steps[name]()
            t0 = time.perf_counter()
            steps[name]()
            samples[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: statistics.median(v) for name, v in samples.items()}


def time_gpu(steps: dict) -> dict:
    """Median seconds of each step by CUDA events (do_bench flushes the L2 before every call);
    the copy is timed before and after the others, its better time kept."""
    import triton.testing

    def bench(fn):
        return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median") / 1e3

    times = {name: bench(fn) for name, fn in steps.items()}
    times[COPY] = min(times[COPY], bench(steps[COPY]))
    return times


def measure(device: str, sizes: list[int], row_shapes: list[tuple[int, int]], losses: list[str],
            regime: str) -> dict:
    """Every loss at every size (the pair and triplet losses at every (rows, D) shape), each
    provider timed next to a copy moving as many bytes: that copy's bandwidth in the group is
    the loss's ceiling."""
    import torch

    import cases

    timer = time_gpu if device == "cuda" else time_cpu_interleaved
    providers = cases.providers(device)
    groups = [(loss, size) for size in sizes for loss in losses if loss not in cases.ROW_LOSSES]
    groups += [(loss, shape) for shape in row_shapes for loss in losses if loss in cases.ROW_LOSSES]
    rows = []
    for loss, size in groups:
        n = size[0] * size[1] if isinstance(size, tuple) else size
        label = cases.size_label(size)
        case = cases.make_case(loss, size, torch.float32, device)
        # a copy that moves as many bytes as the fused step must (half read, half written), so
        # that both sit at the same level of the memory hierarchy
        copy, copy_bytes = cases.copy_step(max(1, case.nbytes // 8), torch.float32, device)
        steps = {COPY: copy, **{name: make(case) for name, make in providers.items()}}
        times = timer(steps)
        copy_gbps = copy_bytes / times.pop(COPY) / 1e9
        for name, seconds in times.items():
            rows.append({"loss": loss, "size": label, "n": n, "provider": name, "seconds": seconds,
                         "bytes": case.nbytes, "gbps": case.nbytes / seconds / 1e9, "copy_gbps": copy_gbps})
            print(f"  [{regime}] {loss:16s} {label:10s} {name:16s} {seconds * 1e3:9.3f} ms "
                  f"({100 * case.nbytes / seconds / 1e9 / copy_gbps:.0f}% of copy)", flush=True)
        del case, steps, copy
    return {"regime": regime, "description": REGIMES[regime], "rows": rows}


def table(result: dict) -> str:
    lines = [f"### Forward+backward, float32 — {result['description']}", "",
             "| loss | size | provider | time (ms) | GB/s | copy GB/s | % of copy | vs eager | vs compile |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    groups: dict[tuple, dict[str, dict]] = {}
    for row in result["rows"]:
        groups.setdefault((row["loss"], row["size"]), {})[row["provider"]] = row
    for (loss, size), rows in groups.items():
        eager = rows.get("torch-eager", {}).get("seconds")
        compiled = rows.get("torch-compile", {}).get("seconds")
        for name, row in rows.items():
            s = row["seconds"]
            lines.append(
                f"| {loss} | {size} | {name} | {s * 1e3:.3f} | {row['gbps']:.1f} | "
                f"{row['copy_gbps']:.1f} | {100 * row['gbps'] / row['copy_gbps']:.0f}% | "
                f"{eager / s:.2f}x | {compiled / s:.2f}x |")
    lines.append("")
    lines.append("GB/s: the bytes a fused step must move (read every input once, write every gradient "
                 "once) per second. copy GB/s: a copy moving as many bytes (read + written), timed in "
                 "the same rounds as that loss's providers.")
    return "\n".join(lines)


def run_child(regime: str, args: argparse.Namespace, preload: str | None) -> dict:
    env = dict(os.environ)
    if preload:
        env["LD_PRELOAD"] = preload
    command = [sys.executable, __file__, "--child", regime, "--sizes", args.sizes, "--row-shapes", args.row_shapes,
               "--losses", args.losses]
    out = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


DEFAULT_SIZES = {"cpu": "18,22,24,25", "cuda": "22,25,28"}
DEFAULT_ROW_SHAPES = {"cpu": "4096x128,16384x256,65536x256,65536x512",
                      "cuda": "4096x128,65536x256,65536x512,1048576x256"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None, help="comma-separated powers of two (elements)")
    parser.add_argument("--row-shapes", default=None,
                        help="comma-separated ROWSxD of the pair and triplet losses, e.g. 65536x256 "
                             "(--sizes does not apply to them)")
    parser.add_argument("--losses", default=None, help="comma-separated, default all")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(HERE / "results"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sys.path.insert(0, str(HERE))
    import cases

    args.sizes = args.sizes or DEFAULT_SIZES[device]
    args.row_shapes = args.row_shapes or DEFAULT_ROW_SHAPES[device]
    args.losses = args.losses or ",".join(cases.LOSSES)
    try:
        sizes = [1 << int(p) for p in args.sizes.split(",")]
        row_shapes = [tuple(int(v) for v in shape.split("x")) for shape in args.row_shapes.split(",")]
    except ValueError as e:
        parser.error(f"--sizes takes powers of two like 22,25 and --row-shapes ROWSxD like 65536x256 ({e})")
    if any(len(shape) != 2 or min(shape) < 1 for shape in row_shapes):
        parser.error(f"--row-shapes takes ROWSxD with positive ROWS and D, got {args.row_shapes}")
    losses = args.losses.split(",")
    unknown = [loss for loss in losses if loss not in cases.LOSSES]
    if unknown:
        parser.error(f"unknown loss {', '.join(unknown)}; known: {', '.join(cases.LOSSES)}")

    if args.child:  # one regime, in this process; the JSON goes last on stdout
        result = measure(device, sizes, row_shapes, losses, args.child)
        print(json.dumps(result))
        return

    import fastloss

    if device == "cuda":
        machine = torch.cuda.get_device_name()
        results = [measure(device, sizes, row_shapes, losses, "gpu")]
    else:
        machine = cpu_name()
        results = [run_child("default", args, None)]
        tcmalloc = next((p for p in TCMALLOC_CANDIDATES if Path(p).exists()), None)
        if tcmalloc:
            results.append(run_child("tcmalloc", args, tcmalloc))
        else:
            print("note: libtcmalloc_minimal.so.4 not found (apt-get install libtcmalloc-minimal4): "
                  "caching-allocator regime skipped", file=sys.stderr)

    commit = os.environ.get("FASTLOSS_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip() or "unknown"
    meta = {"machine": machine, "device": device, "torch": torch.__version__,
            "fastloss": fastloss.__version__, "commit": commit, "threads": torch.get_num_threads(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    header = (f"fastloss benchmark report — {machine} — torch {meta['torch']}, "
              f"{meta['threads']} threads, commit {commit}, {meta['date']}")
    markdown = "\n\n".join([f"## {header}"] + [table(r) for r in results]) + "\n"

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "gpu" if device == "cuda" else "cpu"
    (out / f"report-{tag}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    (out / f"report-{tag}.md").write_text(markdown)
    print()
    print(markdown)
    print(f"(written to {out}/report-{tag}.md and .json)")


if __name__ == "__main__":
    main()
