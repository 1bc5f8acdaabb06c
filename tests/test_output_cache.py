"""fastloss.empty_cache() and fastloss.cache_info(): the CPU output cache under the user's control,
checked with the process's resident memory, not only with the cache's own counters. Each test runs
in a child process: FASTLOSS_OUTPUT_CACHE_MB is read once per process."""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the huge-page output cache is Linux's")

PRELUDE = """
import os, threading, random
import torch, fastloss
MiB = 1 << 20

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def gradient(mib, seed=0):
    # the gradient of an MSE over mib MiB of float32: an output the cache serves (>= 16 MiB)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(mib * MiB // 4, generator=g, requires_grad=True)
    t = torch.randn(mib * MiB // 4, generator=g)
    fastloss.mse_loss(x, t, reduction="sum", backend="cpu").backward()
    return x.grad, 2 * (x.detach() - t)  # fastloss's gradient and the formula's
"""


def run(script: str, limit_mib: int) -> str:
    # A fixed mmap threshold: glibc then returns the inputs' big blocks to the OS when they are
    # freed (its adaptive threshold would keep them in its arenas, and RSS would count them).
    env = {**os.environ, "FASTLOSS_OUTPUT_CACHE_MB": str(limit_mib), "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(script)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_empty_cache_returns_the_free_blocks_to_the_os():
    out = run("""
        assert fastloss.cache_info() == fastloss.CacheInfo(0, 0, 512 * MiB), fastloss.cache_info()
        for mib in (32, 48, 64):
            gradient(mib)  # freed on return: its block stays in the cache
        info = fastloss.cache_info()
        assert info == (3, 144 * MiB, 512 * MiB), info
        before = rss()
        released = fastloss.empty_cache()
        after = rss()
        assert released == 144 * MiB, released
        assert fastloss.cache_info() == (0, 0, 512 * MiB), fastloss.cache_info()
        assert before - after >= 140 * MiB, (before / MiB, after / MiB)  # the pages really went back
        assert fastloss.empty_cache() == 0
        print("released", (before - after) // MiB)
    """, 512)
    assert "released" in out


def test_tensors_from_the_cache_stay_valid_after_empty_cache():
    run("""
        kept, expected = gradient(32, seed=1)  # alive: its block is in use, not in the cache
        gradient(40, seed=2)                   # freed: cached
        assert fastloss.cache_info()[:2] == (1, 40 * MiB), fastloss.cache_info()
        assert fastloss.empty_cache() == 40 * MiB
        other, other_expected = gradient(40, seed=3)  # a fresh block; must not land on `kept`
        assert kept.data_ptr() != other.data_ptr()
        torch.testing.assert_close(kept, expected, rtol=0, atol=0)
        torch.testing.assert_close(other, other_expected, rtol=0, atol=0)
        del kept  # its block now comes back to the cache, under the limit
        assert fastloss.cache_info()[:2] == (1, 32 * MiB), fastloss.cache_info()
        again, again_expected = gradient(32, seed=4)  # and is reused
        torch.testing.assert_close(again, again_expected, rtol=0, atol=0)
        assert fastloss.cache_info()[:2] == (0, 0), fastloss.cache_info()
    """, 256)


def test_the_limit_holds_under_changing_sizes_from_two_threads():
    out = run("""
        torch.set_num_threads(1)  # two Python threads, each running kernels
        limit = fastloss.cache_info().limit
        assert limit == 96 * MiB
        errors, peak = [], [0]
        done = threading.Event()

        def work(seed):
            rng = random.Random(seed)
            try:
                for i in range(30):
                    mib = rng.choice((16, 20, 24, 36, 52))
                    got, expected = gradient(mib, seed=seed * 100 + i)
                    if not torch.equal(got, expected):
                        errors.append(f"wrong gradient at {mib} MiB")
            except Exception as exc:  # report, not hang
                errors.append(repr(exc))

        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], fastloss.cache_info().bytes)

        base = rss()
        watcher = threading.Thread(target=watch)
        watcher.start()
        workers = [threading.Thread(target=work, args=(s,)) for s in (1, 2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=240)
        done.set()
        watcher.join()
        assert not any(w.is_alive() for w in workers), "a worker hung"
        assert not errors, errors
        info = fastloss.cache_info()
        assert 0 < peak[0] <= limit and info.bytes <= limit, (peak[0], info)
        # nothing is in use now: what the process grew by is the cache, within its limit
        grown = rss() - base
        assert grown <= limit + 16 * MiB, (grown / MiB, info)
        released_before = rss()
        assert fastloss.empty_cache() == info.bytes
        assert released_before - rss() >= info.bytes - 4 * MiB, "the counters must match the memory"
        print("peak", peak[0] // MiB)
    """, 96)
    assert int(out.split()[-1]) > 0


def test_python_m_fastloss_shows_the_cache_limit():
    env = {**os.environ, "FASTLOSS_OUTPUT_CACHE_MB": "300"}
    out = subprocess.run([sys.executable, "-m", "fastloss"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "CPU output cache: up to 300 MiB (FASTLOSS_OUTPUT_CACHE_MB)" in out.stdout, out.stdout
    env["FASTLOSS_OUTPUT_CACHE_MB"] = "0"
    out = subprocess.run([sys.executable, "-m", "fastloss"], env=env, capture_output=True, text=True, timeout=120)
    assert "CPU output cache: off (FASTLOSS_OUTPUT_CACHE_MB=0)" in out.stdout, out.stdout
