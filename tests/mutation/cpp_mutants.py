"""Hand-written mistakes in the C++ kernels, each applied alone to a copy of the source tree,
the CPU extension rebuilt, and the test files that cover it run: each must be caught.

    python tests/mutation/cpp_mutants.py [--only N ...] [--list]

The copy is built once in full (FASTLOSS_CUDA=0) and then incrementally: a mutant recompiles
only the objects that include the file it changes. The CUDA kernels share the formula headers
(csrc/formulas/) with the CPU ones, so a formula mistake caught here is caught for both; the
CUDA-only code cannot run without a GPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

ROWS = ["tests/test_row_losses.py", "tests/test_modules_and_arguments.py"]
POINTWISE = ["tests/test_pointwise_values.py", "tests/test_modules_and_arguments.py"]
MASKED = ["tests/test_masked_mse.py", "tests/test_modules_and_arguments.py"]
BATCH = ["tests/test_batch_losses.py", "tests/test_modules_and_arguments.py"]
SOFTMAX = ["tests/test_info_nce.py", "tests/test_modules_and_arguments.py"]
ISA = ["tests/test_pointwise_ops.py"]

# (file, the exact text, its replacement, what the mistake is, the tests that must catch it)
MUTANTS = [
    ("csrc/formulas/pointwise.h", "    d_input = T(2) * diff;\n    d_target = -d_input;\n  }\n};\n\n// l = |x - t|",
     "    d_input = diff;\n    d_target = -d_input;\n  }\n};\n\n// l = |x - t|",
     "MSE gradient missing its factor 2", POINTWISE),
    ("csrc/formulas/pointwise.h", "    loss = select(abs_diff < beta, T(0.5) * diff * diff / beta, abs_diff - T(0.5) * beta);",
     "    loss = select(abs_diff <= beta, T(0.5) * diff * diff / beta, abs_diff + T(0.5) * beta);",
     "smooth L1: sign of the linear branch's offset", POINTWISE),
    ("csrc/formulas/pointwise.h", "    d_input = select(abs_diff > delta, fmath::copysign(delta, diff), diff);",
     "    d_input = select(abs_diff > delta, fmath::copysign(T(1), diff), diff);",
     "Huber: outer gradient 1 instead of delta", POINTWISE),
    ("csrc/cpu/pointwise_loss.cpp", "  args.grad_scale = red == Reduction::kMean ? 1.0 / weight_sum : 1.0;",
     "  args.grad_scale = red == Reduction::kMean ? 1.0 / double(n) : 1.0;",
     "weighted mean's gradient divided by the element count, not the weight sum", POINTWISE),
    ("csrc/cpu/pointwise_loss.cpp", "    value = total / weight_sum;  // 0/0",
     "    value = total / double(n);  // 0/0",
     "weighted mean's value divided by the element count", POINTWISE),
    ("csrc/cpu/kernel_helpers.h", "  if (j < len) block(j, int(len - j));",
     "  if (j + 1 < len) block(j, int(len - j));",
     "a one-element tail block skipped (every family)", POINTWISE + ROWS),
    ("csrc/cpu/kernel_helpers.h", "  fold_lanes<kLanes / 2>(s);", "  fold_lanes<kLanes / 4>(s);",
     "lane sum drops half the lanes (wrong lane count)", POINTWISE + ROWS),
    # (a first version filled the lanes past a tail with 1 instead of 0: equivalent, since every
    # consumer masks those lanes, and replaced by this one)
    ("csrc/cpu/pointwise_kernels.h", "  for (int j = 0; j < n; ++j) dst[j] = load<Acc>(src[(base + j) % period]);",
     "  for (int j = 0; j < n; ++j) dst[j] = load<Acc>(src[(base + j + 1) % period]);",
     "a broadcast weight's block read one element off", POINTWISE),
    ("csrc/cpu/row_loss.cpp", "  args.grad_scale = reduction == 1 ? 1.0 / double(n) : 1.0;",
     "  args.grad_scale = reduction != 0 ? 1.0 / double(n) : 1.0;",
     "row losses: 'sum' gradient divided by N", ROWS),
    ("csrc/cpu/row_loss.cpp", "  if (!none) loss_out.fill_(reduction == 1 ? total / double(n) : total);",
     "  if (!none) loss_out.fill_(reduction == 1 ? total / double(n - 1) : total);",
     "row losses: mean divided by N - 1", ROWS),
    ("csrc/cpu/row_loss_kernels.h", "        const bool inside = k < n;", "        const bool inside = k <= n;",
     "row sums: the first lane past the tail counted", ROWS),
    ("csrc/formulas/row.h", "  dloss_dd = y * d - select(gap > T(0), (T(1) - y) * hinge, T(0));",
     "  dloss_dd = y * d + select(gap > T(0), (T(1) - y) * hinge, T(0));",
     "contrastive: sign of the dissimilar pairs' gradient", ROWS),
    ("csrc/formulas/row.h", "    s[0] += fmath::abs(a - b + q.eps);", "    s[0] += fmath::abs(a - b);",
     "Manhattan distance without torch's eps", ROWS),
    ("csrc/formulas/row.h", "      const T share = select(d_an == d_pn, T(0.5), T(1));",
     "      const T share = select(d_an == d_pn, T(1), T(1));",
     "triplet swap: a tie's gradient not halved", ROWS),
    ("csrc/formulas/row.h", "    k[2] = -dloss_dcos * cos / m2;", "    k[2] = -dloss_dcos * cos / m1;",
     "cosine embedding: the second norm's gradient uses the first norm", ROWS),
    ("csrc/formulas/row.h", "    return v * std::pow(a, p - T(2));", "    return v * std::pow(a, p - T(1));",
     "triplet p > 2: direction's power off by one", ROWS),
    ("csrc/formulas/masked_mse.h", "  const T var = centered_square_sum / T(p - 1);",
     "  const T var = centered_square_sum / T(p);", "masked MSE: biased variance (not MAE's unbiased)", MASKED),
    ("csrc/cpu/masked_mse_loss.cpp", "  args.grad_scale = 1.0 / (double(p) * mask_sum);",
     "  args.grad_scale = 1.0 / mask_sum;", "masked MSE: gradient not divided by P", MASKED),
    ("csrc/cpu/masked_mse_kernels.h", "    if (m == Acc(0)) {  // masked out: the row is not read",
     "    if (m <= Acc(0.5)) {  // masked out: the row is not read",
     "masked MSE: small float mask weights dropped", MASKED),
    ("csrc/formulas/batch_pair.h", "  const T resolution = T(8) * std::numeric_limits<T>::epsilon() * norms;",
     "  const T resolution = T(8e6) * std::numeric_limits<T>::epsilon() * norms;",
     "in-batch distances: near-duplicates rounded to 0 far too eagerly", BATCH),
    ("csrc/formulas/batch_pair.h", "  a = over_distance(select(gap > T(0), T(-1), T(0)), d);",
     "  a = over_distance(select(gap >= T(0), T(-1), T(0)), d);",
     "in-batch contrastive: gradient at the margin's boundary", BATCH),
    ("csrc/cpu/batch_pair_loss.cpp", "      scale_neg = sums[3] > 0 ? 1.0 / sums[3] : 0.0;",
     "      scale_neg = sums[3] > 0 ? 1.0 / (sums[3] + 1) : 0.0;",
     "AvgNonZero: the negative count off by one", BATCH),
    ("csrc/formulas/batch_pair.h", "    dcost = select(v >= T(0), T(1), e) / (T(1) + e);",
     "    dcost = select(v >= T(0), e, T(1)) / (T(1) + e);",
     "soft batch-hard: sigmoid's branches swapped", BATCH),
    ("csrc/formulas/info_nce.h", "  if constexpr (kCol) c += col_w * (exp_below(logit, col_lse) - hit);",
     "  if constexpr (kCol) c += col_w * (exp_below(logit, row_lse) - hit);",
     "CLIP: the column term normalised by the row's log-sum-exp", SOFTMAX),
    ("csrc/cpu/info_nce_kernels.h", "  const int64_t p = (r + a.pos_offset) % a.pos_period - a.col0;",
     "  const int64_t p = (r + a.pos_offset + 1) % a.pos_period - a.col0;",
     "softmax losses: the positive one column off", SOFTMAX),
    ("csrc/formulas/info_nce.h", "  s = rescaled(s, m, shift) + rescaled(s2, m2, shift);",
     "  s = s + rescaled(s2, m2, shift);", "online log-sum-exp: the old sum not rescaled to the new max", SOFTMAX),
    ("csrc/cpu/info_nce_loss.cpp", "  if (need_grad_b) acc_b.mul_(scale);", "",
     "softmax losses: the key gradient not divided by the temperature", SOFTMAX),
    ("csrc/cpu/row_loss_kernels.h", "          static_cast<T*>(a.loss_out)[r0 + i] = Store<T>::of(losses[i]);",
     "          static_cast<T*>(a.loss_out)[r0 + i] = Store<T>::of(losses[i ^ int(i + 1 < rows)]);",
     "row losses, evaluation: a row given its neighbour's loss", ROWS),
    ("csrc/cpu/lanes.h", "{ return (i / W) * 2 * W + second * W + i % W; }",
     "{ return (i / W) * 2 * W + second * W + (i + 1) % W; }",
     "rows folded together: a lane summed into its neighbour's sum", ROWS),
    # only the bit-for-bit comparison of the instruction-set builds can see a mistake in the AVX2
    # build on an AVX-512 machine (the AVX-512 build is the one every other test runs)
    ("csrc/cpu/row_loss_kernels.h", "      for (int k = 0; k < kLanes; ++k) {\n        Acc s[3]",
     "      for (int k = 0; k < kLanes - int(FASTLOSS_ISA_NAME[3] == '2'); ++k) {\n        Acc s[3]",
     "AVX2 build only: row sums one lane short", ISA),
]


def _run(cmd, cwd, env, log, timeout):
    with open(log, "w") as f:
        try:
            return subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return "timeout"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=int, nargs="*", help="mutant numbers (from --list)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--work", default="/tmp/fastloss-cpp-mutation", help="the copy to build in")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the copy's earlier build (the sources are copied afresh; only what changed rebuilds)")
    args = parser.parse_args()
    chosen = [(k, m) for k, m in enumerate(MUTANTS) if not args.only or k in args.only]
    if args.list:
        for k, m in chosen:
            print(f"{k:2d} {m[0]}: {m[3]}")
        return 0
    for k, (path, old, new, what, tests) in chosen:  # every mutant applies to exactly one place
        count = (REPO / path).read_text().count(old)
        if count != 1:
            raise SystemExit(f"mutant {k} ({what}): its text occurs {count} times in {path}")
    work = Path(args.work)
    if not args.reuse:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    for name in ("setup.py", "pyproject.toml", "csrc", "fastloss", "kernels", "tests"):
        src = REPO / name
        for path in ([src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]):
            if "__pycache__" in path.parts or path.name.startswith("_C"):
                continue
            dest = work / path.relative_to(REPO)
            # only what differs, with a fresh time stamp (so that a file restored over a mutant
            # left by an interrupted run is rebuilt)
            if not dest.exists() or dest.read_bytes() != path.read_bytes():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, dest)
    env = {**os.environ, "FASTLOSS_CUDA": "0", "MAX_JOBS": os.environ.get("MAX_JOBS", "2"),
           "PYTHONPATH": str(work), "PYTHONDONTWRITEBYTECODE": "1"}
    build = [sys.executable, "setup.py", "build_ext", "--inplace"]
    print(f"building the unmutated copy in {work} ...", flush=True)
    if _run(build, work, env, work / "build.log", 3600) != 0:
        raise SystemExit(f"the unmutated copy does not build: {work / 'build.log'}")
    caught = []
    for k, (path, old, new, what, tests) in chosen:
        start = time.monotonic()
        target = work / path
        original = target.read_text()
        target.write_text(original.replace(old, new))
        try:
            built = _run(build, work, env, work / f"build-{k}.log", 3600)
            if built != 0:
                outcome = "caught (does not compile)"
            else:
                rc = _run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests,
                           "-k", "not triton"], work, env, work / f"test-{k}.log", 1800)
                outcome = "missed" if rc == 0 else f"caught (pytest rc {rc})"
        finally:
            target.write_text(original)
        caught.append(not outcome.startswith("missed"))
        print(f"{k:2d} {outcome:26s} {time.monotonic() - start:5.0f} s  {path}: {what}", flush=True)
    _run(build, work, env, work / "build-restore.log", 3600)
    print(f"\n{sum(caught)} of {len(caught)} C++ mutants caught")
    return 0 if all(caught) else 1


if __name__ == "__main__":
    sys.exit(main())
