"""Which Python files are mutated, and which tests each mutant of a file runs.

A file's selection is the tests that exercise it, the fastest killers first (pytest stops at
the first failure). Tests that cannot see a mutant of the Python (the 2^24-row, 2^31-element
and memory probes, the GPU compile check, the thread-count and instruction-set comparisons,
which run the C++ kernels only) are left out to keep a surviving mutant's run short.
"""

from __future__ import annotations

# The Python that decides results: argument handling, backend choice, the ops and autograd,
# the reference formulas, the Triton kernels (run under the interpreter here).
TARGETS = [
    "fastloss/_args.py",
    "fastloss/_backend.py",
    "fastloss/functional.py",
    "fastloss/nn.py",
    "fastloss/distributed.py",
    "fastloss/reference.py",
    "fastloss/ops/autograd.py",
    "fastloss/ops/pointwise.py",
    "fastloss/ops/row.py",
    "fastloss/ops/masked_mse.py",
    "fastloss/ops/batch.py",
    "fastloss/ops/info_nce.py",
    "kernels/pointwise_loss.py",
    "kernels/row_loss.py",
    "kernels/masked_mse.py",
    "kernels/batch_pair_loss.py",
    "kernels/info_nce.py",
]

# Slow tests that only the C++ kernels, the GPU or the allocator can fail.
SLOW = ("not more_than_2_to_the and not memory_stays_linear and not thread_count and not instruction_set "
        "and not streaming and not block_cache and not triton_gpu_compile")

MODULES = ["tests/test_modules_and_arguments.py"]
ERRORS = ["tests/test_errors.py"]
DROP_IN = ["tests/test_drop_in_domain.py"]
POINTWISE = ["tests/test_pointwise_values.py", "tests/test_nan_inf.py", "tests/test_pointwise_ops.py"]
ROWS = ["tests/test_row_losses.py", "tests/test_nan_inf.py"]
MASKED = ["tests/test_masked_mse.py", "tests/test_nan_inf.py"]
BATCH = ["tests/test_batch_losses.py"]
SOFTMAX = ["tests/test_info_nce.py"]
AUTOGRAD = ["tests/test_autograd_fidelity.py"]
DISTRIBUTED = ["tests/test_distributed.py"]
# the plain-formula path of create_graph and torch.func, quickly
PLAIN_PATH = ["tests/test_autograd_fidelity.py::test_func_grad_every_argument",
              "tests/test_autograd_fidelity.py::test_jvp_and_forward_ad"]

# The strongest quick tests first (pytest stops at the first failure): the modules-and-arguments
# file checks every loss against its independent oracle in a few seconds.
SELECTIONS = {
    "fastloss/_args.py": MODULES + ERRORS + ["tests/test_pointwise_values.py"] + DROP_IN + MASKED + SOFTMAX,
    "fastloss/_backend.py": MODULES + ERRORS + DROP_IN,
    "fastloss/functional.py": MODULES + ERRORS + ["tests/test_pointwise_values.py"] + DROP_IN + MASKED + SOFTMAX
    + BATCH,
    "fastloss/nn.py": MODULES + ["tests/test_pointwise_values.py"] + DROP_IN,
    "fastloss/distributed.py": DISTRIBUTED,
    "fastloss/reference.py": MODULES + ["tests/test_pointwise_values.py"] + DROP_IN + MASKED
    + ["tests/test_row_losses.py"] + PLAIN_PATH + BATCH + SOFTMAX + DISTRIBUTED,
    "fastloss/ops/autograd.py": MODULES + AUTOGRAD + ["tests/test_pointwise_ops.py"] + SOFTMAX,
    "fastloss/ops/pointwise.py": MODULES + POINTWISE + DROP_IN,
    "fastloss/ops/row.py": MODULES + ROWS + PLAIN_PATH,
    "fastloss/ops/masked_mse.py": MODULES + MASKED + PLAIN_PATH,
    "fastloss/ops/batch.py": MODULES + BATCH + PLAIN_PATH + DISTRIBUTED,
    "fastloss/ops/info_nce.py": MODULES + SOFTMAX + DISTRIBUTED,
    "kernels/pointwise_loss.py": MODULES + POINTWISE,
    "kernels/row_loss.py": MODULES + ROWS,
    "kernels/masked_mse.py": MODULES + MASKED,
    "kernels/batch_pair_loss.py": MODULES + BATCH,
    "kernels/info_nce.py": MODULES + SOFTMAX,
}

# Mutants of the autograd layer are backend-independent: the CPU kernels' cases suffice there.
KEYWORDS = {"fastloss/ops/autograd.py": "cpu"}


def selection_for(path: str) -> list[str]:
    """pytest arguments for a mutant of `path`: its test files (each once, in order) and the
    slow tests left out. Mutants of a Triton kernel run the Triton tests only."""
    files = list(dict.fromkeys(SELECTIONS[path]))
    keyword = SLOW
    if path.startswith("kernels/"):
        keyword += " and triton"
    if path in KEYWORDS:
        keyword += f" and {KEYWORDS[path]}"
    return [*files, "-k", keyword]
