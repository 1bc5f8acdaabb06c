"""What every result file records about where it was measured: the machine (CPU model and
cores, GPU name and driver), the versions (Python, torch, Triton, fastloss), the commit and the
date."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or 'CPU'}, {os.cpu_count()} cores"


def last_level_cache_bytes() -> int:
    """The largest CPU cache (Linux sysfs), or 32 MiB when unknown."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip()
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        try:
            sizes.append(int(text.rstrip("KMG")) * scale)
        except ValueError:
            pass
    return max(sizes, default=32 * 2**20)


def commit() -> str:
    """The short commit, "+dirty" when the tree has changes ($FASTLOSS_COMMIT wins: the GPU
    machine gets a copy of the tree without its history)."""
    if os.environ.get("FASTLOSS_COMMIT"):
        return os.environ["FASTLOSS_COMMIT"]
    def git(*args):
        return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def metadata(device: str) -> dict:
    """The machine and versions of this process."""
    import torch

    import fastloss

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    meta = {"machine": cpu_name(), "device": device, "cpu": cpu_name(), "python": platform.python_version(),
            "torch": torch.__version__, "triton": triton_version, "fastloss": fastloss.__version__,
            "commit": commit(), "threads": torch.get_num_threads(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
        meta["machine"] = f"{meta['gpu']} ({meta['cpu']})"
        meta["cuda"] = torch.version.cuda
        query = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True)
        meta["driver"] = query.stdout.strip().splitlines()[0] if query.returncode == 0 and query.stdout else None
    return meta


def describe(meta: dict) -> str:
    """One line naming the machine, the versions and the commit."""
    parts = [meta["machine"]]
    if meta.get("driver"):
        parts.append(f"driver {meta['driver']}, CUDA {meta.get('cuda')}")
    parts.append(f"torch {meta['torch']}, Triton {meta.get('triton')}, fastloss {meta['fastloss']}, "
                 f"Python {meta['python']}")
    parts.append(f"{meta['threads']} threads, commit {meta['commit']}, {meta['date']}")
    return " — ".join(parts)
