"""Issue 21, point 5: answers that were wrong without a word, as a Pyro user meets them.

Each test fails on the code before the fix: a ``pyro.deterministic`` of a reduction had sd 0
(draws computed in one vectorised batch), Pyro's ``Predictive`` with a second fit's guide drew
the first fit's posterior, ``summary()`` changed at every call, NUTS ignored a model's
``pyro.param``, ``@config_enumerate`` was refused, the CLI's ``predict`` gave the observed site
only, and errors named bayesdl's file instead of the user's.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import run_cli
from pyro.distributions import constraints
from pyro.infer import Predictive, config_enumerate

import bayesdl

Y4 = torch.tensor([0.5, -0.2, 1.0, 0.3])
#: theta_i ~ N(0, 1), y_i ~ N(theta_i, 1): theta_i | y ~ N(y_i / 2, 1/2), so the posterior sd
#: of theta_bar = mean(theta) is sqrt(1/2 / 4)
SD_THETA_BAR = math.sqrt(0.5 / 4)


def theta_mean(y):
    """The issue's model: a deterministic mean of a latent vector."""
    theta = pyro.sample("theta", dist.Normal(0.0, 1.0).expand([4]).to_event(1))
    pyro.deterministic("theta_bar", theta.mean())
    pyro.sample("y", dist.Normal(theta, 1.0).to_event(1), obs=y)


def _as_pyro_computes_them(model, draws: dict[str, torch.Tensor], names=("theta_bar",)) -> None:
    """Each deterministic draw is what Pyro's sequential Predictive computes from its theta."""
    ref = Predictive(model, posterior_samples={"theta": draws["theta"]})(y=Y4)
    for name in names:
        assert torch.allclose(draws[name], ref[name].reshape(draws[name].shape)), name


@pytest.fixture(scope="module")
def vi_mean(tmp_path_factory):
    out = tmp_path_factory.mktemp("vi") / "run"
    pyro.set_rng_seed(0)
    post = bayesdl.fit(theta_mean, {"y": Y4}, steps=1500, lr=0.05, progress=False, out=out)
    return post, out


def test_a_deterministic_mean_is_per_draw_under_vi(vi_mean):
    post, out = vi_mean
    _as_pyro_computes_them(theta_mean, post.sample(300))
    _as_pyro_computes_them(theta_mean, post.predict(num_samples=300))
    row = post.summary()["theta_bar"]
    assert row["std"] == pytest.approx(SD_THETA_BAR, rel=0.15), row  # was exactly 0
    saved = json.loads((out / "summary.json").read_text())["posterior"]["theta_bar"]
    assert saved["std"] == pytest.approx(SD_THETA_BAR, rel=0.15)
    pytest.importorskip("arviz")
    idata = post.to_arviz(500)
    assert float(idata.posterior["theta_bar"].std()) == pytest.approx(SD_THETA_BAR, rel=0.15)


REDUCTIONS = {
    "sum": lambda t: t.sum(),
    "max": lambda t: t.max(),
    "cat": lambda t: torch.cat([t, t[:1]]),
    "index": lambda t: t[0],
    "len": lambda t: torch.tensor(float(len(t))),
}


@pytest.mark.parametrize("op", sorted(REDUCTIONS))
def test_deterministic_reductions_are_per_draw(op):
    def model(y):
        theta = pyro.sample("theta", dist.Normal(0.0, 1.0).expand([4]).to_event(1))
        pyro.deterministic("r", REDUCTIONS[op](theta))
        pyro.sample("y", dist.Normal(theta, 1.0).to_event(1), obs=y)

    pyro.set_rng_seed(0)
    post = bayesdl.fit(model, {"y": Y4}, steps=20, progress=False)
    _as_pyro_computes_them(model, post.sample(50), ["r"])
    _as_pyro_computes_them(model, post.predict(num_samples=50), ["r"])


def test_a_deterministic_mean_is_per_draw_under_nuts(tmp_path):
    pyro.set_rng_seed(0)
    post = bayesdl.fit(
        theta_mean, {"y": Y4}, method="nuts", num_samples=300, warmup=200, chains=1,
        progress=False, out=tmp_path / "run",
    )  # fmt: skip
    _as_pyro_computes_them(theta_mean, post.sample())
    _as_pyro_computes_them(theta_mean, post.predict(num_samples=200))
    row = post.summary()["theta_bar"]
    assert row["std"] == pytest.approx(SD_THETA_BAR, rel=0.25), row
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())["posterior"]
    assert saved["theta_bar"] == row  # summary.json holds the same numbers
    pytest.importorskip("arviz")
    idata = post.to_arviz()
    assert float(idata.posterior["theta_bar"].std()) == pytest.approx(row["std"], rel=1e-2)


def mean_location(y=None):
    """A likelihood whose location is a reduction over the latent vector."""
    theta = pyro.sample("theta", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    with pyro.plate("data", 5):
        pyro.sample("y", dist.Normal(theta.mean(), 0.01), obs=y)


def test_a_likelihood_that_reduces_over_latents_is_drawn_per_draw():
    pyro.set_rng_seed(0)
    post = bayesdl.fit(mean_location, {"y": torch.full((5,), 0.7)}, steps=200, progress=False)
    draws = post.predict(num_samples=200)
    residual = draws["y"] - draws["theta"].mean(-1, keepdim=True)  # noise of sd 0.01 per draw
    assert residual.std().item() == pytest.approx(0.01, rel=0.2)


def guided(y):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    pyro.sample("b", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.Normal(w.sum() + 0 * y, 1.0), obs=y)


def reducing_guide(y):
    """A guide whose ``b`` is centred on a reduction of its own ``w``."""
    loc = pyro.param("w_loc", torch.zeros(3))
    w = pyro.sample("w", dist.Normal(loc, 1.0).to_event(1))
    pyro.sample("b", dist.Normal(w.sum(), 0.1))


def test_a_guide_that_reduces_over_its_draws_is_drawn_per_draw():
    pyro.set_rng_seed(0)
    post = bayesdl.fit(guided, {"y": torch.tensor(1.0)}, guide=reducing_guide, steps=20)
    draws = post.sample(300)
    residual = draws["b"] - draws["w"].sum(-1)
    assert residual.std().item() == pytest.approx(0.1, rel=0.2)  # was the sd of w.sum()


#: the runs of :func:`linreg` (the number of passes a prediction makes)
RUNS: list[int] = []


def linreg(x, y=None):
    RUNS.append(1)
    theta = pyro.sample("theta", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    pyro.deterministic("theta_norm", theta.norm(dim=-1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((x * theta).sum(-1), 0.5), obs=y)


def test_a_model_that_broadcasts_keeps_its_vectorised_passes():
    """The check costs a few runs of the model, not one per draw (speed is measured in
    benchmarks/predict_draws.py; here the number of runs)."""
    x = torch.randn(30, 3)
    post = bayesdl.fit(linreg, {"x": x, "y": x.sum(-1)}, steps=50, progress=False)
    RUNS.clear()
    draws = post.predict(num_samples=1000)
    assert draws["y"].shape == (1000, 30)
    assert torch.allclose(draws["theta_norm"], draws["theta"].norm(dim=-1))
    assert len(RUNS) < 20, len(RUNS)


# ----------------------------------------------------------------------------- guides


def location(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_pyro_predictive_with_post_guide_draws_that_fits_posterior(tmp_path):
    """Both autoguides' parameters are called ``AutoNormal.locs.mu``: each guide must still
    draw from its own fit, in Pyro's Predictive and under poutine.trace, in any order, and
    after saving and loading; Pyro's global store is left alone."""
    before = dict(pyro.get_param_store().items())
    posts = {}
    for sign in (-1.0, 1.0):
        pyro.set_rng_seed(0)
        y = torch.full((20,), 5 * sign)
        posts[sign] = bayesdl.fit(location, {"y": y}, steps=600, lr=0.1, progress=False)
    loaded = {s: bayesdl.load(p.save(tmp_path / str(s)), model=location) for s, p in posts.items()}
    for sign in (-1.0, 1.0, -1.0):  # posterior mean 5 sign (1 - 1/2001), sd 0.22
        for post in (posts[sign], loaded[sign]):
            fitted = post.summary()["mu"]
            assert fitted["mean"] == pytest.approx(5 * sign, abs=0.2)
            mu = Predictive(location, guide=post.guide, num_samples=400)(y=torch.zeros(20))["mu"]
            assert abs(mu.mean().item() - fitted["mean"]) < 4 * fitted["std"] / 20
            tr = pyro.poutine.trace(post.guide).get_trace(y=torch.zeros(20))
            assert abs(tr.nodes["mu"]["value"].item() - fitted["mean"]) < 5 * fitted["std"]
            assert post.guide.median()["mu"].item() == pytest.approx(fitted["mean"], rel=1e-6)
    assert dict(pyro.get_param_store().items()) == before


def location_guide(y):
    loc = pyro.param("q_loc", torch.tensor(0.0))
    scale = pyro.param("q_scale", torch.tensor(1.0), constraint=constraints.positive)
    pyro.sample("mu", dist.Normal(loc, scale))


def test_a_guide_function_keeps_its_fitted_params_in_pyros_predictive():
    pyro.set_rng_seed(0)
    post = bayesdl.fit(location, {"y": torch.full((20,), 3.0)}, guide=location_guide, steps=800,
                       lr=0.05, progress=False)  # fmt: skip
    mu = Predictive(location, guide=post.guide, num_samples=400)(y=torch.zeros(20))["mu"]
    assert mu.mean().item() == pytest.approx(3.0, abs=0.2)  # not the initial 0
    assert "q_loc" not in pyro.get_param_store()


# ----------------------------------------------------------------------------- summaries


def scales(y):
    """A real, a positive and a unit-interval site: exact, exact and quantile-exact."""
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(5.0))
    pyro.sample("p", dist.Beta(2.0, 2.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


Y20 = torch.linspace(-1.0, 3.0, 20)


def test_summary_is_the_same_at_every_call_and_everywhere(tmp_path):
    out = tmp_path / "run"
    post = bayesdl.fit(scales, {"y": Y20}, steps=300, progress=False, out=out)
    pyro.set_rng_seed(123)
    state = torch.get_rng_state()
    first = post.summary()
    assert torch.equal(torch.get_rng_state(), state)  # the user's random state is untouched
    assert post.summary() == first
    saved = json.loads((out / "summary.json").read_text())["posterior"]
    assert saved == first
    assert bayesdl.load(out, model=scales).summary() == first
    printed = repr(post)
    assert f"{first['p']['mean']:.4g}" in printed and "exact from the guide" in printed


@pytest.mark.parametrize("guide", ["auto-normal", "auto-mvn", "auto-lowrank", "auto-delta"])
def test_summary_is_exact_where_the_guide_has_the_moments(guide):
    pyro.set_rng_seed(0)
    post = bayesdl.fit(scales, {"y": Y20}, guide=guide, steps=300, progress=False)
    s = post.summary()
    assert s["mu"]["exact"] == s["sigma"]["exact"] == ["mean", "std", "5%", "50%", "95%"]
    median = post.guide.median()
    assert s["mu"]["mean"] == pytest.approx(median["mu"].item(), rel=1e-6)  # mean = loc
    if guide == "auto-delta":
        assert s["p"]["exact"] == s["mu"]["exact"] and s["sigma"]["std"] == 0
        return
    assert s["p"]["exact"] == ["5%", "50%", "95%"]  # a logit-normal's mean has no closed form
    q = post.guide.quantiles([0.05, 0.5, 0.95])  # Pyro's own, from the same Gaussian
    for name in ("mu", "sigma", "p"):
        got = [s[name][c] for c in ("5%", "50%", "95%")]
        assert got == pytest.approx(q[name].reshape(-1).tolist(), rel=1e-5), name
    many = post.sample(40_000)["sigma"].double()  # the log-normal's moments, by Monte Carlo
    se = many.std().item() / math.sqrt(len(many))
    assert abs(many.mean().item() - s["sigma"]["mean"]) < 4 * se
    assert many.std().item() == pytest.approx(s["sigma"]["std"], rel=0.03)


# ----------------------------------------------------------------------------- NUTS


def with_param(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    noise = pyro.param("noise", torch.tensor(1.0), constraint=constraints.positive)
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, noise), obs=y)


def test_nuts_refuses_a_model_param_in_one_line(tmp_path):
    with pytest.raises(bayesdl.UserError, match=r"pyro\.param sites \(noise\).*NUTS") as e:
        bayesdl.fit(with_param, {"y": Y20}, method="nuts", out=tmp_path / "run")
    assert "\n" not in str(e.value) and "prior" in str(e.value) and "VI" in str(e.value)
    assert not (tmp_path / "run").exists()
    f = tmp_path / "m.py"
    f.write_text(
        "import pyro, torch, pyro.distributions as dist\n\n\n"
        "def model(y):\n"
        "    mu = pyro.sample('mu', dist.Normal(0.0, 10.0))\n"
        "    noise = pyro.param('noise', torch.tensor(1.0))\n"
        "    pyro.sample('y', dist.Normal(mu, noise).expand([len(y)]).to_event(1), obs=y)\n"
    )
    np.savez(tmp_path / "d.npz", y=Y20.numpy())
    data, run = str(tmp_path / "d.npz"), str(tmp_path / "cli")
    p = run_cli("fit", f"{f}:model", "--data", data, "--inference", "nuts", "--out", run)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert "pyro.param sites (noise)" in lines[0] and f"{f}:4" in lines[0]
    assert not (tmp_path / "cli").exists()


# ----------------------------------------------------------------------------- enumeration

K = 2


@config_enumerate
def mixture(data):
    """Pyro's Gaussian-mixture tutorial model, as written there."""
    weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(K)))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
    with pyro.plate("components", K):
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)


def test_config_enumerate_is_honoured():
    """The tutorial's MAP fit: its data are two clusters with means 0.5 and 11, which the
    N(0, 10) prior hardly moves."""
    data = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0])
    pyro.set_rng_seed(0)
    post = bayesdl.fit(mixture, {"data": data}, guide="auto-delta", init_value=["locs=[0,10]"],
                       steps=300, lr=0.1, progress=False)  # fmt: skip
    summary = post._run.summary
    assert summary["estimator"] == "enum"
    assert "enumeration" in summary["user_model"]["estimator_chosen"]
    locs = sorted(post.summary()["locs"]["mean"])
    assert locs == pytest.approx([0.5, 11.0], abs=0.2)


# ----------------------------------------------------------------------------- CLI predict


LINREG_FILE = """\
import pyro
import pyro.distributions as dist
import torch


def linreg(x, y=None):
    theta = pyro.sample("theta", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    pyro.deterministic("theta_norm", theta.norm(dim=-1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((x * theta).sum(-1), 0.5), obs=y)
"""


def test_cli_predict_returns_every_site_as_python_does(tmp_path):
    f = tmp_path / "lr.py"
    f.write_text(LINREG_FILE)
    x = np.random.default_rng(0).normal(size=(30, 3))
    np.savez(tmp_path / "d.npz", x=x, y=x.sum(-1))
    out = tmp_path / "run"
    p = run_cli("fit", f"{f}:linreg", "--data", str(tmp_path / "d.npz"), "--steps", "300",
                "--out", str(out))  # fmt: skip
    assert p.returncode == 0, p.stderr
    x_new = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, -1.0]])
    np.savez(tmp_path / "new.npz", x=x_new)
    p = run_cli("predict", str(out), "--input", str(tmp_path / "new.npz"), "--output",
                str(tmp_path / "p.json"))  # fmt: skip
    assert p.returncode == 0, p.stderr
    cli = json.loads((tmp_path / "p.json").read_text())
    py = bayesdl.load(out).predict({"x": torch.as_tensor(x_new)}, 1000)
    assert set(cli) - {"num_samples"} == set(py) == {"theta", "theta_norm", "y"}
    for name, draws in py.items():
        mean, sd = draws.double().mean(0), draws.double().std(0)
        se = math.sqrt(2) * sd / math.sqrt(1000)  # two independent runs of 1000 draws
        assert (torch.as_tensor(cli[name]["mean"]).double() - mean).abs().le(5 * se).all(), name
        assert torch.allclose(torch.as_tensor(cli[name]["std"]).double(), sd, rtol=0.15), name


# ----------------------------------------------------------------------------- errors

MODEL_FILE = """\
import pyro
import pyro.distributions as dist


def model(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(w * x, 1.0), obs=y)


def prior_only(x):
    pyro.sample("w", dist.Normal(0.0, 1.0))
"""


def test_errors_from_python_name_the_users_file_and_line(tmp_path, monkeypatch):
    (tmp_path / "users_models.py").write_text(MODEL_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import users_models as m

    path = str(tmp_path / "users_models.py")
    x = torch.randn(10)
    with pytest.raises(bayesdl.UserError) as e:
        bayesdl.fit(m.model, {"y": x}, steps=5)  # x missing
    assert f"model() at {path}:5 needs the argument 'x'" in str(e.value)
    with pytest.raises(bayesdl.UserError) as e:
        bayesdl.fit(m.model, {"x": x, "y": x}, steps=5)  # w * x: shapes 3 and 10
    assert path in str(e.value) and "line 8" in str(e.value) and "user_model" not in str(e.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bayesdl.fit(m.prior_only, {"x": x}, steps=5, progress=False)
    (w,) = [w for w in caught if "no observed site" in str(w.message)]
    assert (w.filename, w.lineno) == (path, 11)


SCRIPT = """\
import pyro
import pyro.distributions as dist
import torch

import bayesdl


def model(x, y=None, noise="1.0"):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(w * x, float(noise)), obs=y)


post = bayesdl.fit(model, {"x": torch.randn(10), "y": torch.randn(10)}, steps=5, progress=False)
for call in (lambda: bayesdl.fit(model, {"y": torch.randn(10)}),
             lambda: post.predict({"x": torch.randn(2, 2, 3)}),
             lambda: post.predict({"x": torch.randn(3), "noise": "wide"})):
    try:
        call()
    except bayesdl.UserError as e:
        print(e)
"""


def test_errors_name_the_line_of_a_model_in_main(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)  # fmt: skip
    lines = p.stdout.strip().splitlines()
    assert p.returncode == 0 and len(lines) == 3, p.stdout + p.stderr
    assert f"model() at {script}:8 needs the argument 'x'" in lines[0]
    assert lines[1].startswith("predict: x has shape (2, 2, 3), but the model was fitted with x")
    assert lines[2].startswith(f"model() at {script}:8 in predict:") and "line 11" in lines[2]
    assert "user_model.py" not in p.stdout
