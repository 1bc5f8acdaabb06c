"""The report's Markdown: a headline per part, then a table per loss with every regime, mode,
dtype, size and provider; speed-ups only between providers that agree with float64."""

from __future__ import annotations

import math


def index_rows(rows: list[dict]) -> dict:
    return {(r["loss"], r["size"], r["dtype"], r["mode"], r["provider"]): r for r in rows}


def ratio(index: dict, row: dict, other: str) -> float | None:
    """other's time over row's, when both ran and both agree with float64."""
    o = index.get((row["loss"], row["size"], row["dtype"], row["mode"], other))
    if not o or "seconds" not in o or "seconds" not in row or not (o["ok"] and row["ok"]):
        return None
    return o["seconds"] / row["seconds"]


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def loss_tables(regimes: list[dict]) -> str:
    """Markdown: one table per loss, every regime, mode, dtype, size and provider."""
    by_loss: dict[str, list[str]] = {}
    for result in regimes:
        index = index_rows(result["rows"])
        for r in result["rows"]:
            lines = by_loss.setdefault(r["loss"], [])
            head = f"| {result['regime']} | {r['mode']} | {r['dtype']} | {r['size']} | {r['provider']} |"
            if "skipped" in r:
                lines.append(f"{head} {r['skipped']} | | | | | | |")
                continue
            check = f"ok ({r['error_rel']:.0e})" if r["ok"] else f"**DISAGREES** ({r['error_rel']:.0e})"
            compile_note = f" (+{r['compile_seconds']:.1f} s compile)" if r.get("compile_seconds") else ""
            memory = f" {r['peak_extra_bytes'] / 2**20:,.0f} MiB |" if "peak_extra_bytes" in r else ""
            lines.append(f"{head} {r['seconds'] * 1e3:.3f} [{r['min'] * 1e3:.3f}-{r['max'] * 1e3:.3f}]{compile_note} | "
                         f"{r['gbps']:.1f} | {r['pct_of_ceiling']:.0f}% of {r['ceiling_gbps']:.0f} |{memory} {check} | "
                         f"{_x(ratio(index, r, 'torch-eager'))} | {_x(ratio(index, r, 'torch-compile'))} |")
    gpu = any(r["regime"] == "gpu" for r in regimes)
    out = []
    for loss, lines in by_loss.items():
        out += [f"#### {loss}", "",
                "| regime | mode | dtype | size | provider | time (ms), median [min-max] | GB/s | % of copy GB/s |"
                + (" peak extra memory |" if gpu else "") + " check vs float64 | vs eager | vs compile |",
                "|---|---|---|---|---|---|---:|---:|" + ("---:|" if gpu else "") + "---|---:|---:|", *lines, ""]
    return "\n".join(out)


def headline(regimes: list[dict]) -> str:
    """Per loss at its largest float32 size: fastloss's time, speed-ups and % of the ceiling, in
    training and in evaluation (the caching regime where there is one)."""
    result = next((r for r in regimes if r["regime"] in ("caching", "gpu")), regimes[0])
    index = index_rows(result["rows"])
    lines = [f"Memory-bound losses, float32, the largest size, {result['description']}:", "",
             "| loss | size | provider | train: ms | vs eager | vs compile | % of copy | "
             "forward: ms | vs eager | vs compile | % of copy |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    mine = [r for r in result["rows"] if r["provider"].startswith("fastloss-") and r["dtype"] == "float32"
            and r["mode"] == "train" and "seconds" in r]
    largest: dict[tuple, dict] = {}
    for r in mine:
        key = (r["loss"], r["provider"])
        if key not in largest or r["n"] > largest[key]["n"]:
            largest[key] = r
    for (loss, provider), r in largest.items():
        cells = []
        for mode in ("train", "forward"):
            m = index.get((loss, r["size"], "float32", mode, provider))
            if not m or "seconds" not in m:
                cells.append("| - | - | - | -")
                continue
            flag = "" if m["ok"] else " (disagrees)"
            cells.append(f"| {m['seconds'] * 1e3:.2f}{flag} | {_x(ratio(index, m, 'torch-eager'))} | "
                         f"{_x(ratio(index, m, 'torch-compile'))} | {m['pct_of_ceiling']:.0f}%")
        lines.append(f"| {loss} | {r['size']} | {provider} " + " ".join(cells) + " |")
    return "\n".join(lines)


def batch_headline(result: dict) -> str:
    """In-batch losses, training, float32, Gaussian rows, the largest N every provider reached."""
    rows = [r for r in result["rows"] if r["mode"] == "train" and r["rows_kind"] == "gaussian"]
    lines = ["In-batch losses, forward+backward, float32 (peak extra memory in parentheses):", "",
             "| loss | N x D | fastloss | pml | torch eager | torch.compile |", "|---|---|---|---|---|---|"]
    cells: dict[tuple, dict[str, str]] = {}
    for r in rows:
        text = (f"{r['seconds']:.3f} s ({r['peak_extra_bytes'] / 2**20:,.0f} MiB)" if "seconds" in r
                else r.get("error", ""))
        if "seconds" in r and not r["ok"]:
            text += " DISAGREES"
        cells.setdefault((r["loss"], r["n"], r["d"]), {})[r["provider"].split("-cpu")[0].split("-cuda")[0]] = text
    for (loss, n, d), c in cells.items():
        lines.append(f"| {loss} | {n} x {d} | {c.get('fastloss', '')} | {c.get('pml', '')} | "
                     f"{c.get('torch-eager', '')} | {c.get('torch-compile', '')} |")
    return "\n".join(lines)


def _verdict(mine: float, theirs: float, ceiling: str, limit: float = 100.0) -> str:
    """Why a ratio is what it is, from the two providers' shares of the same ceiling (`limit`: the
    share fastloss's algorithm can reach at most)."""
    reach = "" if limit == 100 else f" (its limit: {limit:.0f}%, the backward recomputes the logits)"
    if mine >= 0.8 * limit:
        room = "out of reach" if theirs * 1.3 > limit else "not reached"
        return f"at the {ceiling} ceiling: {mine:.0f}%{reach}; torch.compile at {theirs:.0f}%, so 1.3x is {room}"
    return f"below the {ceiling} ceiling: {mine:.0f}%{reach}; torch.compile at {theirs:.0f}%"


def _floor2(value: float) -> str:
    return f"{math.floor(value * 100) / 100:.2f}x"  # 1.298 is not shown as 1.30x


# the share of the matrix-product ceiling a tiled softmax loss can reach, counting the products of a
# materialised pass: training does 4 products against 3 counted, the backward sweep 3 against 2
SOFTMAX_LIMIT = {"forward": 100.0, "train": 75.0, "backward": 200 / 3}


def below_target(report: dict, target: float = 1.3) -> str:
    """Every case where fastloss is not `target` times torch.compile, with both providers' share
    of the measured ceiling (the copy, or for the in-batch losses the matrix product)."""
    lines = [f"| part | loss | mode | dtype | size | fastloss vs compile | why (measured) |", "|---|---|---|---|---|---:|---|"]
    for result in (report.get("memory_bound") or {}).get("regimes", []):
        index = index_rows(result["rows"])
        for r in result["rows"]:
            if not r["provider"].startswith("fastloss-") or "seconds" not in r:
                continue
            speedup = ratio(index, r, "torch-compile")
            if speedup is None or speedup >= target:
                continue
            other = index[(r["loss"], r["size"], r["dtype"], r["mode"], "torch-compile")]
            lines.append(f"| {result['regime']} | {r['loss']} | {r['mode']} | {r['dtype']} | {r['size']} | "
                         f"{_floor2(speedup)} | {_verdict(r['pct_of_ceiling'], other['pct_of_ceiling'], 'copy')} |")
    rows = (report.get("in_batch") or {}).get("rows", [])
    timed = {(r["loss"], r["n"], r["d"], r["rows_kind"], r["mode"], r["provider"]): r for r in rows if "seconds" in r}
    for (loss, n, d, kind, mode, provider), r in timed.items():
        other = timed.get((loss, n, d, kind, mode, "torch-compile"))
        if not provider.startswith("fastloss-") or not other or not (r["ok"] and other["ok"]):
            continue
        speedup = other["seconds"] / r["seconds"]
        if speedup < target:
            limit = SOFTMAX_LIMIT[mode] if loss in ("info_nce", "clip", "nt_xent") else 100.0
            lines.append(f"| in-batch | {loss} | {mode} | float32 | {n} x {d} | {_floor2(speedup)} | "
                         f"{_verdict(r['pct_of_ceiling'], other['pct_of_ceiling'], 'matrix-product', limit)} |")
    if len(lines) == 2:
        return f"fastloss is at least {target}x torch.compile in every case measured."
    return "\n".join(lines)


def markdown(report: dict) -> str:
    """The whole report."""
    import batch_report
    import machine

    meta = report["meta"]
    parts = [f"# fastloss benchmark report ({meta['plan']})", "", machine.describe(meta), ""]
    memory = report.get("memory_bound")
    if memory:
        parts += ["Regimes: " + "; ".join(f"{r['regime']}: {r['description']}" for r in memory["regimes"]), ""]
        parts += [headline(memory["regimes"]), ""]
    if report.get("in_batch"):
        parts += [batch_headline(report["in_batch"]), ""]
    if memory:
        parts += ["## Memory-bound losses", "", loss_tables(memory["regimes"]),
                  "GB/s: the bytes the step must move (every input read once; in training and backward every "
                  "gradient written once) per second. % of copy: against a copy moving as many bytes, timed in the "
                  "same rounds (its GB/s after 'of'); a forward only reads, and a read-only pass can outrun a copy (half of "
                  "whose bytes are writes), so a forward may pass 100%; so may a training step, whose gradients go out by "
                  "streaming stores that skip the read of each line a copy pays before writing it. check: the error against float64 on the same inputs, the larger of "
                  "the loss's relative error and the gradients' elementwise error against |g| + mean |g| that all "
                  "but 1 element in 10^4 meet (a row within float32's resolution of a hinge may take the other side "
                  "in float64); tolerance 1e-4 in float32, 2e-2 in bfloat16. A provider that disagrees is never "
                  "ranked. vs eager / vs compile: their time over "
                  "this row's. Backward alone: the gradient of a loss computed once, kept with retain_graph "
                  "(torch.compile's then compiled without donated buffers, which forbid it).", ""]
    if report.get("in_batch"):
        parts += ["## In-batch losses", "", batch_report.tables(report["in_batch"]), ""]
    parts += ["## Where fastloss is not 1.3x torch.compile", "", below_target(report), "",
              "The share of the same-run ceiling (the copy for the memory-bound losses, float32 matrix products "
              "for the in-batch ones) of both providers: a kernel at the floor cannot be much faster than one "
              "already near it.", ""]
    return "\n".join(parts)
