"""stochastic-depth: the exact ELBO over z, unbiased guide gradients, depth against penalty."""

from __future__ import annotations

import json
import sys

import pyro
import pytest
import torch

from bayesdl.fits.svi import fit_problem
from bayesdl.guides.stochastic_depth import AmortizedDepthGuide
from bayesdl.inference.errors import UserError
from bayesdl.inference.estimators import make_estimator
from bayesdl.inference.relaxed import make_relaxed
from bayesdl.models.stochastic_depth import (
    ResidualMLP,
    StochasticDepthModel,
    depth_prior_logits,
    early_exit_logits,
    gaussian_log_density,
)
from bayesdl.workflows.fit_options import from_argv
from bayesdl.workflows.registry import REGISTRY

sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on the shared 2-core machine two threads run ~10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(weight_scale=None, penalty=0.7, n=5, seed=0):
    """A 3-block network on 4 inputs, 3 classes, with a non-uniform q(z | x)."""
    torch.manual_seed(seed)
    L, D, K = 3, 4, 3
    net = ResidualMLP(D, K, L, width=6)
    guide = AmortizedDepthGuide(D, L, hidden=5)
    torch.nn.init.normal_(guide.encoder[-1].weight)
    model = StochasticDepthModel(net, depth_prior_logits(L, penalty), weight_scale=weight_scale)
    x, y = torch.randn(n, D), torch.randint(0, K, (n,))
    return model, guide, x, y


@pytest.mark.parametrize("weight_scale", [None, 2.0])
def test_enum_elbo_is_the_exact_sum_over_depth(weight_scale):
    model, guide, x, y = tiny(weight_scale)
    est = make_estimator("enum", max_plate_nesting=1)
    loss = est.loss(est.wrap_model(model), est.wrap_guide(guide), x=x, y=y)
    with torch.no_grad():  # sum_n sum_z q(z|x_n) [log p(z) + log p(y_n|x_n,z) - log q(z|x_n)]
        log_q = guide.logits(x).log_softmax(-1)
        log_lik = model.net(x).log_softmax(-1)[torch.arange(len(x)), :, y]
        elbo = (log_q.exp() * (model.prior_logits + log_lik - log_q)).sum()
        if weight_scale is not None:
            elbo = elbo + gaussian_log_density(model.net.parameters(), weight_scale)
    # float32 sums of ~10 (or ~700 with the weight prior) terms: agree to rounding
    assert loss.item() == pytest.approx(-elbo.item(), rel=1e-6, abs=1e-5)


def _guide_grad(est, model, guide, x, y) -> torch.Tensor:
    """d(-ELBO)/d(bias of q's last layer), averaged over the data."""
    guide.zero_grad()
    model.zero_grad()
    est.loss(est.wrap_model(model), est.wrap_guide(guide), x=x, y=y).backward()
    return guide.encoder[-1].bias.grad.clone() / len(x)


def test_score_and_relaxed_guide_gradients_agree_with_enum():
    # one input repeated R times: each call averages R independent draws of z (one per datum)
    model, guide, x1, y1 = tiny(n=1)
    R, M = 4000, 20
    x, y = x1.expand(R, -1).contiguous(), y1.expand(R).contiguous()
    exact = _guide_grad(make_estimator("enum", max_plate_nesting=1), model, guide, x, y)
    for name in ("score", "relaxed"):
        pyro.clear_param_store()
        if name == "relaxed":  # low temperature: the relaxation's bias is below the noise
            est = make_relaxed(max_plate_nesting=1, schedule=(0.05, 0.05))
        else:
            est = make_estimator("score", max_plate_nesting=1)
        draws = torch.stack([_guide_grad(est, model, guide, x, y) for _ in range(M)])
        mean, se = draws.mean(0), draws.std(0) / M**0.5
        z = ((mean - exact) / se).abs()
        # 3 components, each ~N(0, 1) if unbiased: |z| < 4 fails with probability < 2e-4
        assert (z < 4).all(), (name, mean, exact, se)
        # and the test has power: the gradient is far from zero relative to its error
        assert (exact.abs() / se).max() > 10, (name, exact, se)


def test_early_exit_runs_only_the_blocks_of_each_depth():
    model, _, x, _ = tiny(n=7)
    depth = torch.tensor([1, 3, 2, 3, 1, 2, 2])
    calls = []
    hooks = [
        b.register_forward_hook(lambda m, i, o: calls.append(len(i[0]))) for b in model.net.blocks
    ]
    logits = early_exit_logits(model.net, x, depth)
    for h in hooks:
        h.remove()
    assert sum(calls) == int(depth.sum())  # 14 block evaluations instead of 7 * 3 = 21
    with torch.no_grad():
        every = model.net(x)
    assert torch.allclose(logits, every[torch.arange(7), depth - 1], atol=1e-5)


def _fit_digits(penalty: float, seed: int = 0) -> dict:
    workflow_cls = REGISTRY["stochastic-depth"]
    argv = ["--steps", "500", "--width", "16", "--depth-penalty", str(penalty), "--seed", str(seed)]
    args = from_argv(workflow_cls, argv)
    workflow = workflow_cls(args)
    problem = workflow.build()
    fit_problem(problem, args.engine, progress=False)
    with problem.scope():
        return workflow.summarize(problem)["test"]


def test_digits_penalty_shrinks_depth_and_early_exit_keeps_accuracy():
    free, moderate = _fit_digits(0.0), _fit_digits(0.05)
    # measured (seeds 0-2, 500 steps): mean depth 4.4-5.0 without penalty, 1.0-1.1 at 0.05
    assert (
        free["early_exit_q_mode"]["mean_depth"] > moderate["early_exit_q_mode"]["mean_depth"] + 1.5
    )
    ee, full = moderate["early_exit_q_mode"], moderate["full_depth_readout"]
    assert ee["mean_depth"] <= 0.7 * 8
    assert ee["fraction_skipped"] == pytest.approx(1 - ee["mean_depth"] / 8)
    assert sum(ee["depth_histogram"]) == 450
    # within one point (4.5 of 450 test digits) of the same network read at full depth
    assert ee["accuracy"] >= full["accuracy"] - 0.01
    assert ee["accuracy"] > 0.93  # and it is a working classifier (measured 0.96-0.98)


def test_cli_fit_evaluate_predict(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "run"
    proc = cli(
        "fit",
        "stochastic-depth",
        "--estimator",
        "relaxed",
        "--steps",
        "40",
        "--width",
        "16",
        "--blocks",
        "4",
        "--out",
        str(out),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "stochastic_depth_histogram.png").exists()
    assert (out / "stochastic_depth_examples.png").exists()
    proc = cli("evaluate", str(out))
    assert proc.returncode == 0, proc.stderr
    ev = json.loads((out / "evaluation.json").read_text())
    for rule in (
        "early_exit_q_mode",
        "joint_mode",
        "predictive_prior",
        "predictive_q",
        "full_depth_readout",
    ):
        assert 0.0 <= ev["test"][rule]["accuracy"] <= 1.0
        assert ev["test"][rule]["nll"] > 0
    ee = ev["test"]["early_exit_q_mode"]
    assert sum(ee["depth_histogram"]) == 450 and len(ee["depth_histogram"]) == 4
    assert ev["timing"]["early_exit_s_per_example"] > 0
    import numpy as np

    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).random((3, 64), dtype=np.float32))
    proc = cli("predict", str(out), "--input", str(tmp_path / "x.npz"))
    assert proc.returncode == 0, proc.stderr
    pred = json.loads(proc.stdout)
    assert len(pred["early_exit_depth"]) == 3 and all(1 <= d <= 4 for d in pred["early_exit_depth"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--fixed-depth", "9"], "--fixed-depth"),
        (["--estimator", "reparam"], "discrete"),
        (["--depth-penalty", "-1"], "--depth-penalty"),
        (["--estimator", "score", "--particles", "4"], "--no-vectorize-particles"),
    ],
)
def test_user_errors(argv, message):
    workflow_cls = REGISTRY["stochastic-depth"]
    args = from_argv(workflow_cls, argv)
    with pytest.raises(UserError, match=message):
        workflow_cls(args).build()


def test_cli_user_error_is_one_line(cli, tmp_path):
    proc = cli("fit", "stochastic-depth", "--fixed-depth", "9", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "--fixed-depth" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
