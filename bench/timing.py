"""How a step is timed: on CPU in interleaved rounds, on a GPU by CUDA events."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def summary(samples: list[float]) -> dict:
    return {"seconds": statistics.median(samples), "min": min(samples), "max": max(samples),
            "samples": len(samples)}


def time_cpu_interleaved(steps: dict[str, Callable[[], None]], min_time: float = 1.0, min_rounds: int = 7,
                         max_rounds: int = 60) -> dict[str, dict]:
    """Median, min and max seconds of each step, timed in rounds (every step once per round, the
    order rotating): a shared machine's bandwidth drifts by tens of percent within seconds, and
    interleaving gives every step, the ceiling's included, the same conditions. Each timed call
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
    return {name: summary(v) for name, v in samples.items()}


def time_gpu(steps: dict[str, Callable[[], None]]) -> dict[str, dict]:
    """Median, min and max seconds of each step by CUDA events; triton's do_bench clears the L2
    cache before every call."""
    import triton.testing

    times = {}
    for name, fn in steps.items():
        samples = triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="all")
        times[name] = summary([ms / 1e3 for ms in samples])
    return times
