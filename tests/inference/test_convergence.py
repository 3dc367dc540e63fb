"""Issue 13: every fit knows whether its ELBO had flattened; ``--steps auto`` runs until it has."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import bayesdl
from bayesdl.inference.convergence import (
    MAX_AUTO_STEPS,
    MIN_ROWS,
    TAIL_FRACTION,
    ConvergenceWarning,
    StepPlan,
    elbo_test,
)
from bayesdl.inference.train import FitConfig, fit
from bayesdl.workflows.fit_options import from_keywords
from bayesdl.workflows.user_model import UserModel, load_module

ROOT = Path(__file__).resolve().parents[2]
RUGGED = load_module(ROOT / "examples" / "rugged_terrain.py")  # Pyro's tutorial regression
rugged, simulate = RUGGED.model, RUGGED.simulate


def rows(elbo, every: int = 100) -> list[dict]:
    return [{"step": every * (i + 1), "elbo": float(e)} for i, e in enumerate(elbo)]


def rugged_data() -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in simulate().items()}


# ----------------------------------------------------------------------------- the test


def test_flat_noise_passes_a_climb_does_not():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.5, 30)
    assert elbo_test(rows(-100 + noise)).converged
    # a climb of 0.2 nats per row over the last 10 rows (2 nats) against 0.5 of noise per row:
    # the least-squares rise has a standard error of about 0.5 * 10 / sqrt(82.5) ~ 0.55
    climb = elbo_test(rows(-100 + noise + 0.2 * np.arange(30)))
    assert not climb.converged and climb.rise > 1.0 and "still rising" in climb.reason
    assert climb.rows == 10 and (climb.first_step, climb.last_step) == (2100, 3000)
    # a noiseless estimator: flat within ATOL nats (the same for every guide)
    assert elbo_test(rows(np.full(30, -4.0) + 1e-4 * np.arange(30))).converged
    assert not elbo_test(rows(np.full(30, -4.0) + 1e-2 * np.arange(30))).converged


def test_too_few_rows_are_not_converged():
    c = elbo_test(rows([-3.0] * (MIN_ROWS - 1)))
    assert not c.converged and "needed" in c.reason
    # rows of the warm-up (another objective) are left out
    assert not elbo_test(rows([-3.0] * 20), from_step=1700).converged
    assert elbo_test(rows([-3.0] * 20), from_step=1400).converged


def test_auto_plan_is_constant_until_flat_then_averages_a_tail():
    plan = StepPlan("auto", "cosine", warmup=0, log_every=100)
    assert plan.total == MAX_AUTO_STEPS and plan.lr_factor(5000) == 1.0
    noise = np.random.default_rng(1).normal(0, 0.3, 60)
    history = rows(-50 - 100 * np.exp(-np.arange(1, 61) / 3) + noise)  # flat from ~row 20
    for i in range(1, len(history) + 1):
        plan.observe(history[:i])
    s = plan.flat_at
    assert s is not None and 1500 <= s <= 5000
    assert plan.total == s + 100 * math.ceil(TAIL_FRACTION * s / 100)
    assert plan.lr_factor(s - 1) == plan.lr_factor(plan.total - 1) == 1.0  # averaged, not decayed
    again = StepPlan("auto", "cosine", log_every=100)
    again.replay(history)  # a resumed fit rebuilds the same plan from its rows
    assert (again.flat_at, again.total) == (plan.flat_at, plan.total)
    fixed = StepPlan(1000, "linear")
    assert fixed.total == 1000 and fixed.lr_factor(500) == pytest.approx(0.5)


# ----------------------------------------------------------------------------- fits


def line(x, y=None):
    import pyro
    import pyro.distributions as dist

    a = pyro.sample("a", dist.Normal(0.0, 10.0))
    b = pyro.sample("b", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(x)) as idx:
        pyro.sample("y", dist.Normal(a + b * x[idx], 0.5), obs=None if y is None else y[idx])


def line_data():
    x = torch.linspace(-2, 2, 50)
    return {"x": x, "y": 1.0 + 2.0 * x + 0.5 * torch.randn(50)}


def test_user_models_default_to_auto_and_stop_when_flat(tmp_path):
    assert UserModel.fit_defaults["steps"] == "auto"
    post = bayesdl.fit(line, data=line_data(), out=tmp_path / "run", progress=False)
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    c = s["convergence"]
    assert s["converged"] is True and post.converged is True and c["steps"] == "auto"
    assert s["steps"] < MAX_AUTO_STEPS and s["steps"] % 100 == 0
    assert c["flat_at_step"] < s["steps"] <= c["flat_at_step"] * (1 + TAIL_FRACTION) + 100
    lrs = [r["lr"] for r in post.history]
    assert lrs[0] == pytest.approx(0.02)  # constant, halved only where the guide wanders
    assert all(lr in (0.02 * 0.5**k for k in range(6)) for lr in lrs)
    assert c["parameters"]["checked"] is True and c["parameters"]["settled"] is True
    assert json.loads((tmp_path / "run" / "config.json").read_text())["args"]["steps"] == "auto"
    mean = post.summary(num_samples=4000)
    assert mean["b"]["mean"] == pytest.approx(2.0, abs=0.2)


def test_a_run_cut_short_says_so_in_one_line(tmp_path, capsys):
    from bayesdl.cli import main

    data = tmp_path / "rugged.npz"
    np.savez(data, **simulate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = bayesdl.fit(rugged, data=rugged_data(), steps=50, progress=False)
    assert post.converged is False and post._run.summary["convergence"]["converged"] is False
    assert [w.category for w in caught].count(ConvergenceWarning) == 1
    spec = f"{ROOT / 'examples' / 'rugged_terrain.py'}:model"
    out = tmp_path / "short"
    argv = ["fit", spec, "--data", str(data), "--steps", "50", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "summary.json").read_text())["converged"] is False
    assert bayesdl.load(out).converged is False


def test_named_models_keep_their_steps_and_report_the_flag():
    post = bayesdl.fit("coin", heads=6, tails=4, progress=False)
    s = post._run.summary
    assert s["steps"] == 2000 and s["converged"] is True and s["convergence"]["steps"] == 2000
    assert from_keywords(bayesdl.registry()["linreg"]).engine.steps == 3000


def test_steps_auto_is_an_option_everywhere():
    options = from_keywords(bayesdl.registry()["coin"], steps="auto")
    assert options.engine.steps == "auto"
    with pytest.raises(bayesdl.UserError, match="--steps must be positive"):
        FitConfig(steps=0).validate()
    with pytest.raises(bayesdl.UserError, match="steps"):
        from_keywords(bayesdl.registry()["coin"], steps="forever")


def test_an_auto_fit_resumed_ends_as_an_uninterrupted_one(tmp_path):
    from pyro.infer.autoguide import AutoNormal

    from bayesdl.inference.train import Interrupted

    data = line_data()
    config = FitConfig(steps="auto", lr=0.05, lr_schedule="cosine", log_every=50)
    whole = fit(line, AutoNormal(line), data, config, tmp_path / "a")
    guide = AutoNormal(line)
    with pytest.raises(Interrupted):
        fit(line, guide, data, config, tmp_path / "b", stop_at_step=whole.steps - 30)
    resumed = fit(line, guide, data, config, tmp_path / "b", resume=True)
    assert resumed.steps == whole.steps and resumed.convergence == whole.convergence
    for name, value in whole.params["params"].items():
        assert torch.equal(value, resumed.params["params"][name]), name


# ----------------------------------------------------------------------------- the case


@pytest.fixture(scope="module")
def rugged_nuts():
    """The NUTS reference of the rugged-terrain regression (2 chains x 500 draws)."""
    return bayesdl.fit(
        rugged, data=rugged_data(), method="nuts", num_samples=500, warmup=300, progress=False
    )


@pytest.mark.slow
def test_rugged_terrain_with_default_settings_lands_on_nuts(rugged_nuts):
    """Pyro's tutorial regression (5 latents) fitted as a user would (``--steps auto``,
    auto-mvn) lands within 0.3 NUTS-sd of NUTS on every site (it was 4-6.7 sd off)."""
    ref = rugged_nuts.summary()
    assert all(r["r_hat"] < 1.05 for r in ref.values())
    post = bayesdl.fit(rugged, data=rugged_data(), guide="auto-mvn", progress=False)
    assert post.converged is True
    fitted = post.summary(num_samples=4000)
    for site, r in ref.items():
        assert abs(fitted[site]["mean"] - r["mean"]) < 0.3 * r["std"], site
    # the comparison agrees: nothing flagged for the converged full-rank fit, everything
    # for one stopped after 20 steps
    assert bayesdl.compare(post, rugged_nuts).flagged == []
    short = bayesdl.fit(rugged, data=rugged_data(), guide="auto-mvn", steps=20, progress=False)
    assert short.converged is False
    assert len(bayesdl.compare(short, rugged_nuts).flagged) == len(ref)
