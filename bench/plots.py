"""PNG plots for a benchmark report (the dict that bench/report.py saves as JSON).

    python bench/plots.py REPORT.json [--out DIR]

Writes up to three figures: speedup.png (fastloss over torch eager and torch.compile on the
memory-bound losses), ceiling.png (fastloss as a percent of the measured bandwidth ceiling)
and memory.png (peak extra memory of the in-batch losses, with out-of-memory runs marked).
Only rows that ran and agreed with the float64 reference (ok: true) are drawn; a figure with
nothing to draw is not written.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on benchmark machines

import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402

Row = dict[str, Any]

DPI = 110
MIB = 1024 * 1024
REGIME_PREFERENCE = ("caching", "gpu", "default")  # the kernels themselves first
BASELINES = (("torch-eager", "vs torch eager"), ("torch-compile", "vs torch.compile"))
SPEEDUP_MODES = (("train", "train (forward + backward)"), ("forward", "forward (no grad)"))
PROVIDER_LINESTYLES = ("-", "--", ":", "-.")
D_LINESTYLES = ("-", "--", ":", "-.")
MIN_PLOTTED_MIB = 1 / 1024  # a log axis cannot show 0 bytes; such points sit at 1 KiB


# ---------------------------------------------------------------- row selection


def _is_fastloss(provider: Any) -> bool:
    return isinstance(provider, str) and provider.startswith("fastloss")


def _number(value: Any) -> float | None:
    """The value as a finite float, or None (bools and strings are not measurements)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _measured(row: Row) -> bool:
    """A row that ran and matched the reference; skipped, failed and wrong rows are not."""
    return (
        row.get("ok") is True
        and "skipped" not in row
        and "error" not in row
        and (_number(row.get("seconds")) or 0.0) > 0.0
    )


def _is_oom(row: Row) -> bool:
    error = row.get("error")
    return isinstance(error, str) and error.lower().startswith("out of memory")


def _chosen_regime(report: dict) -> dict | None:
    """The regime that best shows the kernels: caching, else gpu, else default."""
    regimes = [r for r in (report.get("memory_bound") or {}).get("regimes") or [] if r.get("rows")]
    by_name = {r.get("regime"): r for r in regimes}
    for name in REGIME_PREFERENCE:
        if name in by_name:
            return by_name[name]
    return regimes[0] if regimes else None


# ---------------------------------------------------------------- figure helpers


def _title(report: dict, what: str) -> str:
    meta = report.get("meta") or {}
    where = meta.get("machine", "unknown machine")
    if meta.get("device"):
        where += f" ({meta['device']})"
    return f"{what}\n{where}, commit {meta.get('commit', '?')}"


def _natural(value: Any) -> list:
    """Sort key that orders d=128 before d=1024 and copes with None among the names."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(value))]


def _colors(names: list[Any]) -> dict[Any, Any]:
    """One stable color per name, so a loss keeps its color in every panel."""
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(sorted(names, key=_natural))}


def _styles(names: list[Any], styles: tuple[str, ...]) -> dict[Any, str]:
    return {name: styles[i % len(styles)] for i, name in enumerate(sorted(names, key=_natural))}


def _short(provider: Any) -> str:
    return str(provider).removeprefix("fastloss-")


def _log2_x(ax: Axes, label: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlabel(label)
    ax.grid(True, which="major", alpha=0.3)


def _plot_series(ax: Axes, points: list[tuple[float, float]], **style: Any) -> None:
    points = sorted(points)
    ax.plot([x for x, _ in points], [y for _, y in points], marker="o", markersize=4, **style)


def _legend_below(ax: Axes) -> None:
    """A legend under the panel, where it cannot hide lines or the 100% mark."""
    count = len(ax.get_legend_handles_labels()[1])
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=min(3, max(1, count)), fontsize=8)


def _empty_note(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="gray")


def _shared_legend(fig: Figure, axes: list[Axes], spare: Axes | None = None) -> None:
    """One legend for the figure, deduplicated across panels: in a spare (empty) panel
    when the grid has one, else to the right of the figure."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if not seen:
        return
    if spare is not None:
        spare.legend(seen.values(), seen.keys(), loc="center", fontsize=9)
    else:
        fig.legend(seen.values(), seen.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # tight keeps the outside legend in the file
    plt.close(fig)
    return path


# ---------------------------------------------------------------- speedup.png


def _speedups(rows: list[Row]) -> dict[tuple[str, str], dict[tuple[str, str], list[tuple[float, float]]]]:
    """(mode, baseline) -> (loss, fastloss provider) -> [(n, baseline seconds / fastloss seconds)].

    Float32 only; a ratio needs both rows present and correct.
    """
    timed: dict[tuple, Row] = {}
    for row in rows:
        if row.get("dtype") == "float32" and _measured(row):
            key = (row.get("loss"), row.get("size"), row.get("mode"), row.get("provider"))
            timed[key] = row
    series: dict = defaultdict(lambda: defaultdict(list))
    for (loss, size, mode, provider), fast in timed.items():
        n = _number(fast.get("n"))
        if not _is_fastloss(provider) or n is None or n <= 0:
            continue
        for baseline, _ in BASELINES:
            other = timed.get((loss, size, mode, baseline))
            if other is not None:
                ratio = other["seconds"] / fast["seconds"]
                series[(mode, baseline)][(loss, provider)].append((n, ratio))
    return series


def _ratio_axis(ax: Axes) -> None:
    ax.set_yscale("log")
    # ratios rarely span a decade, so label the minor ticks too (the formatter thins them
    # out by itself when the span grows)
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.grid(True, which="minor", axis="y", alpha=0.2)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1)


def plot_speedup(report: dict, out: Path) -> Path | None:
    regime = _chosen_regime(report)
    if regime is None:
        return None
    series = _speedups(regime.get("rows") or [])
    if not any(series.values()):
        return None
    keys = {key for per_panel in series.values() for key in per_panel}
    colors = _colors(list({loss for loss, _ in keys}))
    providers = sorted({provider for _, provider in keys}, key=_natural)
    linestyles = _styles(providers, PROVIDER_LINESTYLES)

    fig, grid = plt.subplots(len(SPEEDUP_MODES), len(BASELINES), figsize=(12, 8.5), squeeze=False)
    for i, (mode, mode_label) in enumerate(SPEEDUP_MODES):
        for j, (baseline, baseline_label) in enumerate(BASELINES):
            ax = grid[i][j]
            panel = series.get((mode, baseline), {})
            for (loss, provider), points in sorted(panel.items(), key=_natural):
                # name the provider only when there is more than one to tell apart
                label = loss if len(providers) == 1 else f"{loss} ({_short(provider)})"
                _plot_series(ax, points, color=colors[loss], linestyle=linestyles[provider], label=label)
            if not panel:
                _empty_note(ax)
            _log2_x(ax, "elements n")
            _ratio_axis(ax)
            ax.set_ylabel("speed-up (times faster)")
            ax.set_title(f"{mode_label}, {baseline_label}", fontsize=10)
    _shared_legend(fig, list(grid.flat))
    what = f"fastloss speed-up, float32 ({', '.join(map(str, providers))}), regime: {regime.get('regime', '?')}"
    fig.suptitle(_title(report, what))
    fig.tight_layout()
    return _save(fig, out / "speedup.png")


# ---------------------------------------------------------------- ceiling.png


def _memory_bound_ceiling(regime: dict | None) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(loss, fastloss provider) -> [(n, % of ceiling)] for float32 train rows."""
    series: dict = defaultdict(list)
    for row in (regime or {}).get("rows") or []:
        n, pct = _number(row.get("n")), _number(row.get("pct_of_ceiling"))
        if (
            _is_fastloss(row.get("provider"))
            and row.get("dtype") == "float32"
            and row.get("mode") == "train"
            and _measured(row)
            and n and n > 0
            and pct is not None
        ):
            series[(row.get("loss"), row["provider"])].append((n, pct))
    return series


def _in_batch_train_gaussian(report: dict) -> list[Row]:
    rows = (report.get("in_batch") or {}).get("rows") or []
    return [r for r in rows if r.get("mode") == "train" and r.get("rows_kind") == "gaussian"]


def _in_batch_ceiling(report: dict) -> dict[tuple[str, Any, str], list[tuple[float, float]]]:
    """(loss, d, fastloss provider) -> [(N, % of ceiling)]."""
    series: dict = defaultdict(list)
    for row in _in_batch_train_gaussian(report):
        n, pct = _number(row.get("n")), _number(row.get("pct_of_ceiling"))
        if _is_fastloss(row.get("provider")) and _measured(row) and n and n > 0 and pct is not None:
            series[(row.get("loss"), row.get("d"), row["provider"])].append((n, pct))
    return series


def _percent_axis(ax: Axes) -> None:
    ax.set_ylabel("% of ceiling")
    ax.axhline(100.0, color="black", linestyle="--", linewidth=1)
    ax.set_ylim(bottom=0)


def plot_ceiling(report: dict, out: Path) -> Path | None:
    regime = _chosen_regime(report)
    bound = _memory_bound_ceiling(regime)
    batch = _in_batch_ceiling(report)
    if not bound and not batch:
        return None
    panels = int(bool(bound)) + int(bool(batch))
    fig, axes = plt.subplots(1, panels, figsize=(7.5 * panels, 5.5), squeeze=False)
    axes_iter = iter(axes[0])

    if bound:
        ax = next(axes_iter)
        colors = _colors(list({loss for loss, _ in bound}))
        providers = sorted({provider for _, provider in bound}, key=_natural)
        linestyles = _styles(providers, PROVIDER_LINESTYLES)
        for (loss, provider), points in sorted(bound.items(), key=_natural):
            label = loss if len(providers) == 1 else f"{loss} ({_short(provider)})"
            _plot_series(ax, points, color=colors[loss], linestyle=linestyles[provider], label=label)
        _log2_x(ax, "elements n")
        _percent_axis(ax)
        ax.set_title(f"memory-bound losses, float32, train; regime: {regime.get('regime', '?')}", fontsize=10)
        _legend_below(ax)

    if batch:
        ax = next(axes_iter)
        colors = _colors(list({loss for loss, _, _ in batch}))
        d_values = sorted({d for _, d, _ in batch}, key=_natural)
        providers = sorted({provider for _, _, provider in batch}, key=_natural)
        linestyles = _styles([str(d) for d in d_values], D_LINESTYLES)
        for (loss, d, provider), points in sorted(batch.items(), key=_natural):
            label = f"{loss}, d={d}" + ("" if len(providers) == 1 else f" ({_short(provider)})")
            _plot_series(ax, points, color=colors[loss], linestyle=linestyles[str(d)], label=label)
        _log2_x(ax, "batch rows N")
        _percent_axis(ax)
        ax.set_title("in-batch losses, train, gaussian rows (line style: d)", fontsize=10)
        _legend_below(ax)

    fig.suptitle(_title(report, "fastloss, percent of the bandwidth ceiling"))
    fig.tight_layout()
    return _save(fig, out / "ceiling.png")


# ---------------------------------------------------------------- memory.png


def _memory_series(rows: list[Row]) -> dict[str, dict[tuple[str, Any], list[tuple[float, float]]]]:
    """loss -> (provider, d) -> [(N, peak extra MiB)]."""
    series: dict = defaultdict(lambda: defaultdict(list))
    for row in rows:
        n, peak = _number(row.get("n")), _number(row.get("peak_extra_bytes"))
        if _measured(row) and n and n > 0 and peak is not None:
            series[row.get("loss")][(row.get("provider"), row.get("d"))].append((n, peak / MIB))
    return series


def _oom_points(rows: list[Row]) -> dict[str, list[tuple[float, str, Any]]]:
    """loss -> [(N, provider, d)] where that provider ran out of memory."""
    points: dict = defaultdict(list)
    for row in rows:
        n = _number(row.get("n"))
        if _is_oom(row) and n and n > 0:
            points[row.get("loss")].append((n, row.get("provider"), row.get("d")))
    return points


def _mark_oom(
    ax: Axes,
    points: list[tuple[float, str, Any]],
    limit_mib: float,
    measured: dict[tuple[str, Any], list[tuple[float, float]]],
    style: dict[tuple[str, Any], dict],
) -> None:
    """The memory limit as a dotted line, a red x at the limit where a provider ran out,
    and a dotted link from that provider's last measured point to its x (which says whose
    x it is without a pile of labels when several run out at one N)."""
    ax.axhline(limit_mib, color="red", linestyle=":", linewidth=1.2)
    ax.annotate("limit", xy=(0.01, limit_mib), xycoords=("axes fraction", "data"),
                xytext=(2, 3), textcoords="offset points", color="red", fontsize=8)
    for n, provider, d in points:
        before = [p for p in measured.get((provider, d), []) if p[0] < n]
        if before and (provider, d) in style:
            last_n, last_mib = max(before)
            ax.plot([last_n, n], [max(last_mib, MIN_PLOTTED_MIB), limit_mib],
                    color=style[(provider, d)]["color"], linestyle=":", linewidth=1.2)
    for n in sorted({n for n, _, _ in points}):
        ax.plot([n], [limit_mib], marker="x", color="red", markersize=13, markeredgewidth=3, linestyle="none")
        ax.annotate("OOM", xy=(n, limit_mib), xytext=(0, 9), textcoords="offset points",
                    ha="center", color="red", fontsize=8, fontweight="bold")
    ax.set_ylim(top=limit_mib * 4)  # room above the line for the markers and their labels


def plot_memory(report: dict, out: Path) -> Path | None:
    in_batch = report.get("in_batch")
    if not in_batch:
        return None
    rows = _in_batch_train_gaussian(report)
    series = _memory_series(rows)
    limit_gib = _number(in_batch.get("memory_limit_gib"))
    # without a known limit there is no height to put an out-of-memory marker at
    ooms = _oom_points(rows) if limit_gib and limit_gib > 0 else {}
    losses = sorted(set(series) | set(ooms), key=_natural)
    if not losses:
        return None

    providers = sorted({p for per_loss in series.values() for p, _ in per_loss}, key=_natural)
    colors = _colors([str(p) for p in providers])
    d_values = sorted({d for per_loss in series.values() for _, d in per_loss}, key=_natural)
    show_d = len(d_values) > 1
    linestyles = _styles([str(d) for d in d_values], D_LINESTYLES)

    ncols = min(3, len(losses))
    nrows = math.ceil(len(losses) / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.3 * nrows), squeeze=False)
    style = {(p, d): {"color": colors[str(p)], "linestyle": linestyles[str(d)]}
             for per_loss in series.values() for p, d in per_loss}
    clamped = False
    for ax, loss in zip(grid.flat, losses):
        ax.set_yscale("log")  # before any limits are set: they are in log units from here on
        for (provider, d), points in sorted(series.get(loss, {}).items(), key=_natural):
            clamped |= any(mib < MIN_PLOTTED_MIB for _, mib in points)
            points = [(n, max(mib, MIN_PLOTTED_MIB)) for n, mib in points]
            label = f"{provider}, d={d}" if show_d else str(provider)
            _plot_series(ax, points, label=label, **style[(provider, d)])
        if ooms.get(loss):
            _mark_oom(ax, ooms[loss], limit_gib * 1024, series.get(loss, {}), style)
        _log2_x(ax, "batch rows N")
        ax.set_ylabel("peak extra memory (MiB)")
        ax.set_title(str(loss), fontsize=10)
    unused = list(grid.flat)[len(losses):]  # the grid is rectangular; the losses may not fill it
    for ax in unused:
        ax.axis("off")
    _shared_legend(fig, list(grid.flat)[: len(losses)], spare=unused[0] if unused else None)
    what = "in-batch losses: peak extra memory, train, gaussian rows"
    if limit_gib:
        what += f" (limit {limit_gib:g} GiB)"
    fig.suptitle(_title(report, what))
    if clamped:
        fig.text(0.01, 0.0, "points under 1 KiB are drawn at 1 KiB", fontsize=8, color="gray")
    fig.tight_layout()
    return _save(fig, out / "memory.png")


# ---------------------------------------------------------------- entry points


def write_plots(report: dict, out: Path) -> list[Path]:
    """Writes the report's PNG plots into `out` and returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = (plot(report, out) for plot in (plot_speedup, plot_ceiling, plot_memory))
    return [path for path in written if path is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="a report JSON saved by bench/report.py")
    parser.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: the JSON's folder)")
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    paths = write_plots(report, args.out if args.out is not None else args.report.parent)
    for path in paths:
        print(path)
    if not paths:
        print("nothing to plot")


if __name__ == "__main__":
    main()
