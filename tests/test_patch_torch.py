"""fastloss.patch_torch(): torch's losses replaced in place, fastloss's kernels really run, torch
restored exactly."""

import collections
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import fastloss
from fastloss import patch

ROOT = Path(__file__).resolve().parents[1]
# torch's own objects, captured before any test patches anything.
TORCH_FUNCTIONS = {name: getattr(F, name) for name in patch.PATCHABLE}
TORCH_CLASSES = {cls: getattr(torch.nn, cls) for cls in patch.PATCHABLE.values()}


@pytest.fixture(autouse=True)
def torch_restored():
    yield
    fastloss.unpatch_torch()
    for name, fn in TORCH_FUNCTIONS.items():
        assert getattr(F, name) is fn, name
    for name, cls in TORCH_CLASSES.items():
        assert getattr(torch.nn, name) is cls, name


class OpCounter(TorchDispatchMode):
    """Counts the ops dispatched, by namespace and name: fastloss's kernels are `fastloss::...`."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.name()] += 1
        return func(*args, **(kwargs or {}))

    def fastloss_ops(self):
        return {name: n for name, n in self.ops.items() if name.startswith("fastloss::")}


class Net(torch.nn.Module):
    """A model whose training step calls the losses the way library code does: looked up in
    torch.nn.functional and torch.nn at call time."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(16, 32)
        self.recon = torch.nn.Linear(32, 16)
        self.logit = torch.nn.Linear(32, 4)
        self.embed = torch.nn.Linear(32, 8)

    def forward(self, x):
        h = torch.tanh(self.body(x))
        return self.recon(h), self.logit(h), self.embed(h)


def training_step(net, x, labels):
    recon, logits, emb = net(x)
    bce = torch.nn.BCEWithLogitsLoss()  # built inside the step, as library code does
    anchor, positive, negative = emb[0::3], emb[1::3], emb[2::3]
    losses = (F.mse_loss(recon, x), bce(logits, labels),
              F.triplet_margin_loss(anchor, positive, negative, margin=0.5))
    sum(losses).backward()
    return [float(v.detach()) for v in losses], [p.grad.detach().clone() for p in net.parameters()]


def fresh(dtype=torch.float64):
    torch.manual_seed(7)
    net = Net().to(dtype)
    x = torch.randn(48, 16, dtype=dtype)
    labels = torch.rand(48, 4, dtype=dtype).round()
    return net, x, labels


def test_a_patched_training_step_runs_fastloss_and_gives_torchs_results():
    expected_losses, expected_grads = training_step(*fresh())
    with OpCounter() as plain:
        training_step(*fresh())
    assert plain.fastloss_ops() == {}

    replaced = fastloss.patch_torch()
    assert replaced["torch.nn.functional.mse_loss"] is TORCH_FUNCTIONS["mse_loss"]
    assert replaced["torch.nn.BCEWithLogitsLoss"] is TORCH_CLASSES["BCEWithLogitsLoss"]
    assert len(replaced) == 2 * len(patch.PATCHABLE)
    with OpCounter() as counted:
        losses, grads = training_step(*fresh())
    ran = counted.fastloss_ops()
    assert ran.get("fastloss::pointwise_loss", 0) == 2, ran  # MSE and BCE with logits
    assert ran.get("fastloss::row_loss", 0) == 1, ran  # the triplet loss
    assert losses == pytest.approx(expected_losses, rel=1e-12, abs=0)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)

    fastloss.unpatch_torch()
    for name, fn in TORCH_FUNCTIONS.items():
        assert getattr(F, name) is fn
    with OpCounter() as after:
        training_step(*fresh())
    assert after.fastloss_ops() == {}


def test_modules_built_after_the_patch_are_fastlosss_and_torchs_own_modules_follow():
    before = torch.nn.MSELoss()  # torch's class: its forward looks F.mse_loss up at call time
    fastloss.patch_torch()
    after = torch.nn.MSELoss(reduction="sum")
    assert type(after) is fastloss.MSELoss and isinstance(after, TORCH_CLASSES["MSELoss"])
    a, b = torch.randn(7, 5), torch.randn(7, 5)
    with OpCounter() as counted:
        got_before, got_after = before(a, b), after(a, b)
    assert counted.fastloss_ops() == {"fastloss::pointwise_loss": 2}
    torch.testing.assert_close(got_before, TORCH_FUNCTIONS["mse_loss"](a, b))
    torch.testing.assert_close(got_after, TORCH_FUNCTIONS["mse_loss"](a, b, reduction="sum"))


def test_patching_twice_is_harmless_and_unpatching_restores_identity():
    first = fastloss.patch_torch()
    assert fastloss.patch_torch() == {}
    assert F.mse_loss is fastloss.mse_loss and torch.nn.TripletMarginLoss is fastloss.TripletMarginLoss
    restored = fastloss.unpatch_torch()
    assert restored.keys() == first.keys()
    assert all(restored[k] is first[k] for k in first)
    assert fastloss.unpatch_torch() == {}  # nothing left to restore


def test_losses_selects_a_subset_by_function_or_class_name():
    replaced = fastloss.patch_torch(losses=["mse_loss", "CosineEmbeddingLoss"])
    assert set(replaced) == {"torch.nn.functional.mse_loss", "torch.nn.MSELoss",
                             "torch.nn.functional.cosine_embedding_loss", "torch.nn.CosineEmbeddingLoss"}
    assert F.l1_loss is TORCH_FUNCTIONS["l1_loss"] and torch.nn.L1Loss is TORCH_CLASSES["L1Loss"]
    assert F.cosine_embedding_loss is fastloss.cosine_embedding_loss
    fastloss.unpatch_torch(losses="MSELoss")
    assert F.mse_loss is TORCH_FUNCTIONS["mse_loss"]
    assert F.cosine_embedding_loss is fastloss.cosine_embedding_loss
    with pytest.raises(ValueError, match=r"losses must name .*mse_loss.*got 'cross_entropy'"):
        fastloss.patch_torch(losses=["cross_entropy"])


def test_the_context_manager_restores_what_it_patched_even_on_error():
    fastloss.patch_torch(losses=["l1_loss"])  # an outer patch the block must leave in place
    with pytest.raises(RuntimeError, match="inside"):
        with fastloss.patched_torch() as replaced:
            assert "torch.nn.functional.l1_loss" not in replaced
            assert F.huber_loss is fastloss.huber_loss
            raise RuntimeError("inside")
    assert F.huber_loss is TORCH_FUNCTIONS["huber_loss"]
    assert F.l1_loss is fastloss.l1_loss


def test_arguments_fastloss_does_not_fuse_give_torchs_results_under_the_patch():
    torch.manual_seed(3)
    a, p, n = (torch.randn(9, 6, dtype=torch.float64, requires_grad=True) for _ in range(3))
    pred, target = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    weight = torch.rand(5, 4, dtype=torch.float64, requires_grad=True)
    cases = [
        lambda f: f["triplet_margin_loss"](a, p, n, p=3.0, swap=True),
        lambda f: f["mse_loss"](pred, target, weight=weight),
        lambda f: f["smooth_l1_loss"](pred, target, beta=0.0),
        lambda f: f["huber_loss"](pred, target, delta=0.3, reduction="none"),
    ]
    with fastloss.patched_torch():
        patched = {name: getattr(F, name) for name in patch.PATCHABLE}
        for case in cases:
            want = case(TORCH_FUNCTIONS)
            got = case(patched)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
            assert got.requires_grad == want.requires_grad
            if want.requires_grad:
                inputs = [t for t in (a, p, n, weight) if t.requires_grad]
                ga = torch.autograd.grad(got.sum(), inputs, allow_unused=True)
                wa = torch.autograd.grad(want.sum(), inputs, allow_unused=True)
                for g, w in zip(ga, wa):
                    assert (g is None) == (w is None)
                    if g is not None:
                        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-14)


def test_a_compiled_patched_step_has_no_graph_break_and_calls_fastlosss_ops():
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    def step(pred, target, logits, labels):
        return F.mse_loss(pred, target) + torch.nn.BCEWithLogitsLoss()(logits, labels)

    torch.manual_seed(5)
    args = (torch.randn(8, 6), torch.randn(8, 6), torch.randn(8, 3), torch.rand(8, 3).round())
    want = step(*args)
    torch._dynamo.reset()
    with fastloss.patched_torch():
        got = torch.compile(step, backend=capture, fullgraph=True)(*args)
    torch._dynamo.reset()
    assert len(graphs) == 1  # fullgraph=True would have raised on a graph break
    code = graphs[0].code
    assert "torch.ops.fastloss.pointwise_loss" in code, code  # traced into: fastloss's kernels
    assert "torch.ops.aten.mse_loss" not in code and "F.mse_loss" not in code, code
    torch.testing.assert_close(got, want)


def test_patching_before_torch_compile_was_ever_used_still_traces_into_fastloss():
    """torch.compile files functions by identity in a table built on first use: built while
    patched, it would keep fastloss's drop-ins whole in the graph as if they were torch's own."""
    script = textwrap.dedent("""
        import torch, torch.nn.functional as F
        import fastloss
        fastloss.patch_torch()  # before anything imported torch._dynamo
        graphs = []
        def capture(gm, example_inputs):
            graphs.append(gm.code)
            return gm.forward
        a, b = torch.randn(6, 5), torch.randn(6, 5)
        got = torch.compile(lambda x, y: F.mse_loss(x, y), backend=capture, fullgraph=True)(a, b)
        assert len(graphs) == 1 and "torch.ops.fastloss.pointwise_loss" in graphs[0], graphs
        fastloss.unpatch_torch()
        torch.testing.assert_close(got, F.mse_loss(a, b))
        print("traced into fastloss")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and "traced into fastloss" in proc.stdout, proc.stderr
