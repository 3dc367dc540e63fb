"""Issue 21: every fit is right or says it may not be (convergence, k-hat, one verdict).

Models written as a Pyro user writes them; truth by closed form, quadrature or Pyro's own
NUTS (``data/references.json``, made by ``data/make_references.py``).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesdl
from bayesdl.fits.checks import ImportanceWarning
from bayesdl.inference.convergence import StepPlan, elbo_test
from bayesdl.inference.drift import TAU, drift_test
from bayesdl.inference.psis import psis
from bayesdl.workflows.user_model import load_module

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REFERENCES = HERE / "data" / "references.json"  # made by data/make_references.py


# ----------------------------------------------------------------------------- models


def gamma_poisson(counts):
    rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
    with pyro.plate("data", len(counts)):
        pyro.sample("c", dist.Poisson(rate), obs=counts)


def logistic_regression(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 5.0))
    with pyro.plate("data", len(x)) as idx:
        pyro.sample("y", dist.Bernoulli(logits=b + x[idx] @ w), obs=None if y is None else y[idx])


def logistic_data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, generator=g)
    logits = 0.5 + x @ torch.tensor([1.0, -2.0, 0.5])
    return {"x": x, "y": torch.bernoulli(torch.sigmoid(logits), generator=g)}


def line(x, y=None):
    """Known noise sd 0.5: the posterior of (a, b) is Gaussian, in closed form."""
    a = pyro.sample("a", dist.Normal(0.0, 10.0))
    b = pyro.sample("b", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(x)) as idx:
        pyro.sample("y", dist.Normal(a + b * x[idx], 0.5), obs=None if y is None else y[idx])


def line_posterior(x, y):
    X = torch.stack([torch.ones_like(x), x], 1).double()
    precision = torch.eye(2, dtype=torch.float64) / 100 + X.T @ X / 0.25
    cov = torch.linalg.inv(precision)
    return cov @ (X.T @ y.double() / 0.25), cov.diagonal().sqrt()


def rows(elbo, every: int = 100) -> list[dict]:
    return [{"step": every * (i + 1), "elbo": float(e)} for i, e in enumerate(elbo)]


# ----------------------------------------------------------------------------- convergence


def test_the_elbo_test_takes_no_tolerance_from_the_guide_size():
    """The issue's 'ELBO rose 4.29 over steps 500-900, within 25': a rise of 4.3 nats over
    the window with 0.5 nats of noise per row is a climb, for any guide."""
    noise = np.random.default_rng(0).normal(0, 0.5, 9)
    climbing = elbo_test(rows(-400 + noise + np.linspace(0, 4.3, 9) * (np.arange(9) >= 4)))
    assert not climbing.converged and "still rising" in climbing.reason


@pytest.mark.parametrize("dim", [2, 1274])
def test_a_moving_location_is_not_settled_whatever_the_guide_size(dim):
    """One coordinate of the guide drifting by 0.05 posterior sd a row (the others flat, row
    noise 0.01 sd) is caught with 2 coordinates and with 1,274: over the last 10 rows its two
    halves' means lie 5 x 0.05 = 0.25 sd apart."""
    rng = np.random.default_rng(1)
    out = []
    for i in range(30):
        loc = rng.normal(0, 0.01, dim)
        loc[0] += 0.05 * i
        out.append({"step": 100 * (i + 1), "loc": loc, "sd": np.ones(dim)})
    d = drift_test(out, names=[f"z[{j}]" for j in range(dim)])
    assert not d.settled and not d.stationary and d.worst == "z[0]"
    assert d.loc_move == pytest.approx(0.25, abs=0.02)
    for r in out:
        r["loc"][0] = rng.normal(0, 0.01)
    assert drift_test(out).settled


def test_noise_does_not_hide_a_drift():
    """Rows as noisy as a minibatched fit's (0.3 sd per row) around a drift of 0.1 sd a row:
    the window's halves lie 0.5 sd apart, estimated with a standard error of 0.3 sqrt(2 / 5)
    = 0.19, too noisy for the noise clause (2.5 x 0.19 > 0.2), so it settles only where the
    estimate falls below 0.1: P = Phi(-0.4 / 0.19) = 2 %, at most 12 of 200 (binomial 99.9 %)."""
    rng = np.random.default_rng(2)
    settled = 0
    for _ in range(200):
        out = [
            {
                "step": 100 * (i + 1),
                "loc": np.array([i / 10 * 1.0 + rng.normal(0, 0.3)]),
                "sd": [1.0],
            }
            for i in range(30)
        ]
        settled += drift_test(out).settled
    assert settled <= 12


def test_steps_auto_waits_for_the_guide_while_the_elbo_is_flat():
    """A flat, noisy ELBO (what the issue's hierarchy showed) does not end the plan while a
    location still moves; once it stops, the plan ends with a tail."""
    plan = StepPlan("auto", log_every=100)
    plan.tracked, plan.names = True, ["mu"]
    rng = np.random.default_rng(3)
    history = []
    for i in range(60):
        step = 100 * (i + 1)
        history.append({"step": step, "elbo": -388.0 + rng.normal(0, 0.5)})
        plan.moments.append({"step": step, "loc": np.array([min(i, 40) * 0.05]), "sd": [0.2]})
        plan.observe(history)
        if i < 40:
            assert plan.flat_at is None, i
    assert plan.flat_at is not None and plan.flat_at > 4000
    assert plan.verdict(history)["converged"] is True


def test_a_large_auto_mvn_guide_stopped_early_is_not_converged():
    """The issue's hierarchy (49 latents, 1,274 guide numbers) with auto-mvn stopped at 900
    steps was called converged with mu 9 NUTS-sd off; now it says not converged and why."""
    h = load_module(ROOT / "examples" / "hierarchical_normal.py")
    data = {k: torch.as_tensor(v) for k, v in h.simulate().items()}
    data["y"] = data["y"].float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bayesdl.fit(h.model, data=data, guide="auto-mvn", steps=900, progress=False)
    c = post._run.summary["convergence"]
    assert post.converged is False and post.reliable is False
    assert c["parameters"]["checked"] is True and c["parameters"]["loc_move"] > TAU
    assert "moving" in c["reason"] or "rising" in c["reason"]
    assert any(r.startswith("convergence:") for r in post.reliable_reasons)


def nb_regression(x, counts=None):
    """Pyro's GammaPoisson regression (tutorial 'Predictive and Deterministic') with the
    likelihood subsampled, 20 of 100 rows a step."""
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    coef = pyro.sample("coef", dist.Normal(0.0, scale).expand([x.shape[1]]).to_event(1))
    concentration = pyro.sample("concentration", dist.LogNormal(0.0, 1.0))
    with pyro.plate("bins", len(x), subsample_size=20) as idx:
        rate = torch.nn.functional.softplus(x[idx] @ coef)
        obs = None if counts is None else counts[idx]
        pyro.sample("counts", dist.GammaPoisson(concentration, rate), obs=obs)


def nb_data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.ones(100, 1), torch.randn(100, 2, generator=g)], 1)
    rate = torch.nn.functional.softplus(x @ torch.tensor([2.0, 1.0, -0.5]))
    return {"x": x, "counts": torch.poisson(rate * 3.0, generator=g)}


def test_a_subsampled_fit_still_moving_is_not_converged_and_k_hat_uses_every_row():
    """The minibatch ELBO is noisy (the likelihood scaled by 100 / 20); a fit stopped while
    the coefficients still move says so, and k-hat is computed on all 100 rows."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bayesdl.fit(nb_regression, data=nb_data(), steps=300, lr=0.005, progress=False)
    assert post.converged is False
    assert post.checks["k_hat"]["joint"].startswith("all 100 rows of plate 'bins'")
    assert post.checks["k_hat"]["value"] is not None


# ----------------------------------------------------------------------------- k-hat


@pytest.mark.parametrize("scale", [0.5, 2.0, 3.0])
def test_k_hat_and_smoothed_weights_agree_with_arviz(scale):
    az = pytest.importorskip("arviz")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g, dtype=torch.float64)
    log_r = -0.5 * (x / scale) ** 2 + 0.5 * x**2  # p = N(0, scale^2), q = N(0, 1)
    log_w, k = psis(log_r)
    az_log_w, az_k = az.psislw(log_r.numpy().copy())
    assert k == pytest.approx(float(az_k), abs=1e-9)
    assert np.abs(log_w.numpy() - az_log_w).max() < 1e-9
    if scale > 1:  # the ratio's tail has shape 1 - 1 / scale^2: heavy
        assert k > 0.5


def test_k_hat_is_small_on_a_gaussian_posterior():
    """A conjugate regression: the exact posterior is Gaussian, so auto-mvn can hold it."""
    x = torch.linspace(-2, 2, 50)
    y = 1.0 + 2.0 * x + 0.5 * torch.randn(50, generator=torch.Generator().manual_seed(4))
    post = bayesdl.fit(line, data={"x": x, "y": y}, guide="auto-mvn", progress=False)
    k = post.diagnostics()["k_hat"]
    assert k is not None and k < 0.5 and post.checks["k_hat"]["verdict"] == "good"
    mean, sd = line_posterior(x, y)
    fitted = post.summary(4000)
    for j, site in enumerate(("a", "b")):
        assert fitted[site]["mean"] == pytest.approx(float(mean[j]), abs=0.15 * float(sd[j]))
        assert fitted[site]["std"] == pytest.approx(float(sd[j]), rel=0.1)
    assert post.reliable is True


def regression(x, y=None):
    """``w ~ N(0, 10^2 I)``, ``y ~ N(x w, 0.5^2)``: a Gaussian posterior, in closed form."""
    w = pyro.sample("w", dist.Normal(0.0, 10.0).expand([x.shape[1]]).to_event(1))
    with pyro.plate("data", len(x)) as idx:
        pyro.sample("y", dist.Normal(x[idx] @ w, 0.5), obs=None if y is None else y[idx])


def correlated(rho: float, n: int = 50, d: int = 2, seed: int = 5):
    """Inputs of correlation ``rho`` and the exact posterior mean and sd of ``w``."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, generator=g)
    x = rho**0.5 * z + (1 - rho) ** 0.5 * torch.randn(n, d, generator=g)
    y = x @ torch.linspace(1.0, -1.0, d) + 0.5 * torch.randn(n, generator=g)
    precision = torch.eye(d, dtype=torch.float64) / 100 + x.T.double() @ x.double() / 0.25
    cov = torch.linalg.inv(precision)
    return {"x": x, "y": y}, cov @ (x.T.double() @ y.double()) / 0.25, cov.diagonal().sqrt()


def test_k_hat_is_large_where_the_family_is_bad_and_says_so_in_one_line():
    """The issue's regression with correlated inputs (0.95): mean field shrinks the sds to a
    fraction of the truth; k-hat says so, with the remedies. The default (auto: auto-mvn for
    so few latents) holds the correlation and passes."""
    data, mean, sd = correlated(0.95, d=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = bayesdl.fit(regression, data=data, guide="auto-normal", progress=False)
    assert post.converged is True
    k = post.checks["k_hat"]
    assert k["verdict"] == "bad" and (k["value"] is None or k["value"] > 0.7)
    lines = [str(w.message) for w in caught if w.category is ImportanceWarning]
    assert len(lines) == 1 and "\n" not in lines[0]
    for remedy in ("auto-mvn", "nuts", "bayesdl compare"):
        assert remedy in lines[0]
    assert post.reliable is False and any(r.startswith("k_hat:") for r in post.reliable_reasons)
    with pytest.raises(bayesdl.UserError, match="k-hat"):
        post.summary(corrected=True)
    mean_field = np.array(post.summary(4000)["w"]["std"]) / sd.numpy()
    assert mean_field.min() < 0.5
    default = bayesdl.fit(regression, data=data, progress=False)
    assert default._run.summary["guide"] == "auto-mvn" and default.reliable is True
    ratio = np.array(default.summary(4000)["w"]["std"]) / sd.numpy()
    # the full-rank sds of so correlated a posterior fit slowly (0.86-0.98 of the exact ones
    # after 2400 auto steps; 0.90-0.99 after 8000 constant ones): k-hat and the corrected
    # summaries (sd ratios up to 1.17) say so, the convergence test does not see it
    assert ratio.min() > 0.8 and ratio.max() < 1.1


def test_corrected_summaries_move_toward_the_truth():
    """Inputs of correlation 0.5 and a mean-field guide: the marginal sds come out at about
    sqrt(1 - 0.5^2) = 0.87 of the exact ones, k-hat is moderate, and the PSIS-weighted sds lie
    closer to the closed form than the raw ones; the means stay."""
    data, mean, sd = correlated(0.5)
    post = bayesdl.fit(regression, data=data, guide="auto-normal", progress=False)
    assert post.checks["k_hat"]["verdict"] in ("good", "ok")
    raw, fixed = post.summary(4000)["w"], post.summary(4000, corrected=True)["w"]
    raw_sd, fixed_sd = np.array(raw["std"]), np.array(fixed["std"])
    assert np.all(np.abs(fixed_sd - sd.numpy()) < np.abs(raw_sd - sd.numpy()))
    assert np.all(np.abs(np.array(fixed["mean"]) - mean.numpy()) < 0.2 * sd.numpy())
    assert post.checks["k_hat"]["corrected"]["differs"] is True  # the sds differ by > 10 %
    assert post.summary(1000, corrected=True) == post.summary(1000, corrected=True)


# ----------------------------------------------------------------------------- the verdict


def test_an_easy_conjugate_model_is_right_and_reliable_with_defaults():
    """Gamma(2, 1) prior, 20 Poisson counts: posterior Gamma(2 + sum, 1 + 20)."""
    counts = torch.poisson(torch.full((20,), 3.0), generator=torch.Generator().manual_seed(0))
    post = bayesdl.fit(gamma_poisson, data={"counts": counts}, progress=False)
    a, b = 2.0 + float(counts.sum()), 21.0
    fitted = post.summary(4000)["rate"]
    assert fitted["mean"] == pytest.approx(a / b, abs=0.25 * math.sqrt(a) / b)
    assert fitted["std"] == pytest.approx(math.sqrt(a) / b, rel=0.15)
    assert post.converged is True and post.reliable is True, post.reliable_reasons
    assert post.checks["k_hat"]["value"] < 0.5


def test_logistic_regression_with_300_rows_is_right_with_defaults_and_k_hat_is_honest():
    """The optimal Gaussian of this (slightly skewed) posterior has means within 0.03 NUTS sd
    and sds within 1 %, but importance ratios whose tail index is near 0.7 (0.45-0.8 over blocks
    of 4000 draws, higher the closer the fit is to the optimum): the verdict may go either way,
    and must then be the one its k-hat says, with remedies that do not name the guide in use."""
    ref = json.loads(REFERENCES.read_text())["logistic_regression"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = bayesdl.fit(logistic_regression, data=logistic_data(), progress=False)
    assert post.converged is True and "(guide auto-mvn," in repr(post)
    fitted = post.summary(4000)
    for site, r in ref.items():
        diff = np.abs(np.ravel(fitted[site]["mean"]) - np.ravel(r["mean"])) / np.ravel(r["std"])
        assert diff.max() < 0.3, site
        ratio = np.ravel(fitted[site]["std"]) / np.ravel(r["std"])
        assert 0.7 < ratio.min() and ratio.max() < 1.3, site
    k = post.checks["k_hat"]
    assert 0.0 < k["value"] < 1.0
    assert (k["verdict"] == "bad") == (k["value"] > 0.7) and post.reliable is (k["value"] <= 0.7)
    flagged = [str(w.message) for w in caught if "k-hat" in str(w.message)]
    assert len(flagged) == (k["verdict"] == "bad")
    assert all("--guide auto-mvn" not in m and "NUTS" in m for m in flagged)


def test_summary_json_and_the_cli_line_record_each_check(tmp_path, capsys):
    from bayesdl.cli import main

    data = tmp_path / "counts.npz"
    np.savez(data, counts=np.random.default_rng(0).poisson(3.0, 20).astype(float))
    model = tmp_path / "gp.py"
    model.write_text(
        "import pyro, pyro.distributions as dist\n\n"
        "def model(counts):\n"
        "    rate = pyro.sample('rate', dist.Gamma(2.0, 1.0))\n"
        "    with pyro.plate('data', len(counts)):\n"
        "        pyro.sample('c', dist.Poisson(rate), obs=counts)\n"
    )
    out = tmp_path / "run"
    assert main(["fit", f"{model}:model", "--data", str(data), "--quiet", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert set(s["checks"]) == {"convergence", "k_hat"}
    assert s["checks"]["convergence"]["verdict"] == "pass" and s["checks"]["k_hat"]["draws"] == 1000
    assert s["reliable"] is True and s["reliable_reasons"] == []
    assert f"k-hat {s['checks']['k_hat']['value']:.2f}" in line and ": reliable" in line
    again = bayesdl.load(out)
    assert again.reliable is True and again.diagnostics()["k_hat"] == s["checks"]["k_hat"]["value"]


def test_a_named_model_says_what_is_not_checked():
    post = bayesdl.fit("coin", heads=6, tails=4, progress=False)
    k = post.checks["k_hat"]
    assert k["verdict"] == "not checked" and k["reason"].startswith("not checked:")
    assert post.converged is True and post.reliable is None and post.reliable_reasons


def test_nuts_runs_have_a_verdict_under_the_same_keys():
    counts = torch.poisson(torch.full((20,), 3.0), generator=torch.Generator().manual_seed(0))
    post = bayesdl.fit(
        gamma_poisson, data={"counts": counts}, method="nuts", num_samples=300, warmup=200,
        progress=False,
    )  # fmt: skip
    assert set(post.checks) == {"convergence", "r_hat", "ess", "divergences"}
    assert post.reliable is (all(c["verdict"] == "pass" for c in post.checks.values()))
    assert post.checks["r_hat"]["value"] < 1.05
    assert "r_hat" in post.diagnostics()["rate"]  # the per-site diagnostics stay


def _normal_mean(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def _narrow_guide(y):
    """The exact posterior N(sum y / (n + 1), 1 / (n + 1)) with its sd shrunk to 0.75: k-hat
    about 1 - 0.75^2 = 0.44 (the ratio's tail ~ exp(x^2 (1/0.5625 - 1) / 2)), 'good' by
    Yao et al.'s bands, but the summaries' sd is 25 % short."""
    n = len(y)
    loc = pyro.param("loc", lambda: y.sum() / (n + 1))  # held there by lr=1e-9
    pyro.sample("mu", dist.Normal(loc, 0.75 / math.sqrt(n + 1)))


def test_a_low_k_hat_with_shifted_summaries_is_not_called_reliable():
    y = torch.tensor([0.3, -0.4, 1.1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = bayesdl.fit(_normal_mean, data={"y": y}, guide=_narrow_guide, steps=200,
                           lr=1e-9, progress=False)  # fmt: skip
    k = post.checks["k_hat"]
    assert k["value"] < 0.7 and k["verdict"] == "shifted"
    assert 1.2 < k["corrected"]["sd_ratio"][1] < 1.5  # the true sd is 1 / 0.75 = 1.33 times
    reasons = post.reliable_reasons
    assert post.reliable is False and any("summary(corrected=True)" in r for r in reasons)
    assert any("the raw summaries are off" in str(w.message) for w in caught)
    fixed = post.summary(4000, corrected=True)["mu"]["std"]
    assert fixed == pytest.approx(0.5, rel=0.1)  # the exact posterior sd, 1 / sqrt(4)
