"""Mutation testing of fastloss's Python: apply each mutant of tests/mutation/mutants.py to a
private copy of the package, run the tests that cover that file, and count the mutants the
suite kills.

    python tests/mutation/run.py [--jobs 2] [--files fastloss/_args.py ...] [--sample 0.25]

Each worker holds a copy of fastloss/ (the built extension included) with kernels/ as
fastloss/kernels, imports torch, Triton and pytest once, and forks one child per mutant: the
child imports the mutated package from the copy and runs pytest -x on the file's test
selection (tests/mutation/selection.py). A mutant is killed when a test fails, the package
fails to import, or the run exceeds its time limit (four times the unmutated run, plus two
minutes); it survives when every selected test passes. The report lists the survivors per
file; tests/mutation/equivalent.md holds those judged equivalent, which the score leaves out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import mutants as mutation  # noqa: E402
from selection import TARGETS, selection_for  # noqa: E402


def _copy_package(root: Path) -> None:
    """fastloss/ and kernels/ (as fastloss/kernels) under root, without byte-code caches."""
    shutil.copytree(REPO / "fastloss", root / "fastloss", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "kernels", root / "fastloss" / "kernels", ignore=shutil.ignore_patterns("__pycache__"))


def copy_path(root: Path, path: str) -> Path:
    """Where the repository file `path` lives in a worker's copy."""
    if path.startswith("kernels/"):
        return root / "fastloss" / "kernels" / path[len("kernels/"):]
    return root / path


# ---- the worker: one process, one package copy, one forked child per mutant ----

def _run_tests(root: Path, args: list[str], timeout: float, log: Path) -> tuple[str, float]:
    """Runs pytest in a forked child on the package copy at root: (outcome, seconds)."""
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(root)
            sys.path.insert(0, str(root))
            import pytest

            rc = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--rootdir", str(REPO),
                              "-c", str(REPO / "pyproject.toml"), "-W", "ignore", *args])
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(rc))
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            os._exit(3)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        elapsed = time.monotonic() - start
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        if elapsed > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", elapsed
        time.sleep(0.05)
    if code == 0:
        return "survived", elapsed
    if code == 5:
        return "no-tests", elapsed
    return "killed", elapsed


def worker(index: int, jobs: int, plan_file: Path, out_file: Path, skip_baseline: bool = False) -> None:
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    sys.dont_write_bytecode = True  # a stale .pyc of a same-size mutant would be run instead
    import numpy  # noqa: F401  (imported once here, inherited by every child)
    import pytest  # noqa: F401
    import torch
    import triton  # noqa: F401

    torch.set_num_threads(1)
    plan = json.loads(plan_file.read_text())
    root = Path(tempfile.mkdtemp(prefix=f"fastloss-mutation-{index}-"))
    _copy_package(root)
    logs = root / "logs"
    logs.mkdir()
    baselines: dict[str, float] = {}
    with out_file.open("a") as out:
        for item in [m for m in plan["mutants"] if m["worker"] == index]:
            path = item["path"]
            args = [str(REPO / a) if a.startswith("tests/") else a for a in selection_for(path)]
            key = " ".join(args)
            if key not in baselines and skip_baseline:
                baselines[key] = 300.0  # a time limit of 20 minutes
            if key not in baselines:  # the unmutated package must pass the selection
                outcome, seconds = _run_tests(root, args, 3600, logs / "baseline.log")
                if outcome != "survived":
                    raise SystemExit(f"worker {index}: the unmutated package fails {args}: see {logs}/baseline.log")
                baselines[key] = seconds
            target = copy_path(root, path)
            original = (REPO / path).read_text()
            target.write_text(mutation.mutated_source(original, item["index"]))
            try:
                log = logs / f"{item['key'].replace('/', '_')}.log"
                outcome, seconds = _run_tests(root, args, 4 * baselines[key] + 120, log)
            finally:
                target.write_text(original)
            tail = ""
            if outcome == "killed":
                text = log.read_text(errors="replace")
                failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)
                tail = failed[0] if failed else text.strip().splitlines()[-1][:200] if text.strip() else ""
            out.write(json.dumps({**item, "outcome": outcome, "seconds": round(seconds, 2), "by": tail}) + "\n")
            out.flush()
    shutil.rmtree(root, ignore_errors=True)


# ---- the driver ----

def load_equivalent() -> dict[str, str]:
    """key -> reason, from tests/mutation/equivalent.md lines `- path:line:index description: reason`."""
    table = {}
    for line in (HERE / "equivalent.md").read_text().splitlines():
        m = re.match(r"^- `([^`]+)` [^:]*?: (.+)$", line)
        if m:
            table[m.group(1)] = m.group(2)
    return table


def report(results: list[dict], equivalent: dict[str, str]) -> tuple[str, float]:
    rows = []
    totals = [0, 0, 0]
    for path in sorted({r["path"] for r in results}):
        mine = [r for r in results if r["path"] == path]
        killed = sum(r["outcome"] in ("killed", "timeout") for r in mine)
        equiv = sum(r["outcome"] not in ("killed", "timeout") and r["key"] in equivalent for r in mine)
        survived = len(mine) - killed - equiv
        totals = [totals[0] + killed, totals[1] + survived, totals[2] + equiv]
        score = killed / max(killed + survived, 1)
        rows.append(f"| {path} | {len(mine)} | {killed} | {survived} | {equiv} | {100 * score:.1f}% |")
    killed, survived, equiv = totals
    score = killed / max(killed + survived, 1)
    lines = ["| file | mutants | killed | survived | equivalent | score |", "|---|---:|---:|---:|---:|---:|", *rows,
             f"| **all** | {killed + survived + equiv} | {killed} | {survived} | {equiv} | **{100 * score:.1f}%** |",
             "", "Score: killed / (killed + survived), the equivalent mutants left out.", ""]
    left = [r for r in results if r["outcome"] not in ("killed", "timeout") and r["key"] not in equivalent]
    if left:
        lines.append("Survivors (not judged equivalent):")
        for r in sorted(left, key=lambda r: (r["path"], r["line"], r["index"])):
            source_line = (REPO / r["path"]).read_text().splitlines()[r["line"] - 1].strip()
            lines.append(f"- `{r['key']}` {r['description']} ({r['outcome']}): `{source_line[:110]}`")
    return "\n".join(lines), score


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="*", default=TARGETS, help="repository paths to mutate")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sample", type=float, default=1.0, help="a random fraction of the mutants (seeded)")
    parser.add_argument("--keys", nargs="*", help="only these mutants (path:line:index)")
    parser.add_argument("--out", default=str(REPO / "build" / "mutation"), help="folder for the results")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--resume", action="store_true",
                        help="keep the killed (and the equivalent) mutants of an earlier run in --out; run the rest")
    parser.add_argument("--min-score", type=float, default=0.9, help="fail below this score")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="do not run each selection unmutated first (only where the suite is known to pass)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    if args.worker is not None:
        worker(args.worker, args.jobs, Path(args.plan), out / f"worker-{args.worker}.jsonl", args.skip_baseline)
        return 0

    every = [m for path in args.files for m in mutation.mutants(path, (REPO / path).read_text())]
    if args.keys:
        every = [m for m in every if m.key in set(args.keys)]
    if args.sample < 1.0:
        every = random.Random(0).sample(every, round(len(every) * args.sample))
    if args.list:
        for m in every:
            print(m.key, m.description)
        print(f"{len(every)} mutants")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    earlier = [json.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.read_text().splitlines()]
    for old in out.glob("*.jsonl"):
        old.unlink()
    if args.resume:  # a killed mutant stays killed (the tests only grow); the rest run again
        keys = {m.key for m in every}
        equivalent = load_equivalent()
        kept = {r["key"]: r for r in earlier
                if (r["outcome"] in ("killed", "timeout") or r["key"] in equivalent) and r["key"] in keys}
        (out / "earlier.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept.values()))
        every = [m for m in every if m.key not in kept]
        print(f"{len(kept)} mutants killed in an earlier run kept", flush=True)
    plan = out / "plan.json"
    # whole files to each worker (the unmutated run of a file's selection then happens once),
    # the largest first to whichever worker has the fewest mutants so far
    load = [0] * args.jobs
    owner = {}
    for path in sorted({m.path for m in every}, key=lambda p: -sum(m.path == p for m in every)):
        owner[path] = load.index(min(load))
        load[owner[path]] += sum(m.path == path for m in every)
    every.sort(key=lambda m: (m.path, m.index))
    plan.write_text(json.dumps({"mutants": [{**m.__dict__, "key": m.key, "worker": owner[m.path]} for m in every]}))
    print(f"{len(every)} mutants of {len(args.files)} files, {args.jobs} workers; results in {out}", flush=True)
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(k), "--jobs", str(args.jobs),
                               "--plan", str(plan), "--out", str(out)] + (["--skip-baseline"] if args.skip_baseline else []))
             for k in range(args.jobs)]
    start = time.monotonic()
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(10)
            done = sum(len(f.read_text().splitlines()) for f in out.glob("worker-*.jsonl"))
            rate = (time.monotonic() - start) / max(done, 1)
            print(f"\r{done}/{len(every)} mutants, about {rate * (len(every) - done) / 60:.0f} min left   ",
                  end="", flush=True)
    except KeyboardInterrupt:
        for p in procs:
            p.kill()
        raise
    print()
    if any(p.returncode for p in procs):
        print("a worker failed", file=sys.stderr)
        return 1
    results = [json.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.read_text().splitlines()]
    text, score = report(results, load_equivalent())
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "report.md").write_text(text + "\n")
    print(text)
    print(f"\nreport: {out / 'report.md'}")
    if score < args.min_score:
        print(f"score {100 * score:.1f}% is below {100 * args.min_score:.0f}%", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
