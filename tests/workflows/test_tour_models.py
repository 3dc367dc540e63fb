"""The tour's sections on the VAE's log p(x), REINFORCE's variance and stochastic depth's
test-time rules (:mod:`bayesdl.reports.tour_models`), each with its quick settings."""

from __future__ import annotations

import base64
import math
import re

import pyro
import pytest
import torch

from bayesdl.reports import tour_models as tm
from bayesdl.workflows.base import start
from bayesdl.workflows.fit_options import from_keywords
from bayesdl.workflows.registry import REGISTRY

PNG = b"\x89PNG\r\n\x1a\n"
# the quick fits are too short for the convergence check to judge them
pytestmark = pytest.mark.filterwarnings("ignore:the fit has not converged")


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the machine's 2 cores are shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _assert_figure_and_table(section: str, rows: int) -> None:
    """An embedded PNG that decodes, and a table of ``rows`` data rows."""
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', section)
    assert len(images) == 1
    data = base64.b64decode(images[0], validate=True)
    assert data.startswith(PNG) and len(data) > 1000
    tables = re.findall(r"<table>(.*?)</table>", section, re.S)
    assert len(tables) == 1 and tables[0].count("<tr>") == rows + 1
    assert "The lecture: <i>&ldquo;" in section  # the claim, quoted


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("tour") / "tour_models"


@pytest.fixture(scope="module")
def vae(out):
    out.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(0)
    return tm.vae_section(out, quick=True)


@pytest.fixture(scope="module")
def gradients(out):
    out.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(0)
    return tm.gradient_section(out, quick=True)


@pytest.fixture(scope="module")
def depth(out):
    out.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(0)
    return tm.depth_section(out, quick=True)


def test_importance_sampling_beats_plain_monte_carlo_and_rises_with_k(vae):
    html, n = vae
    _assert_figure_and_table(html, len(n["K"]))
    for k, iw, mc, se in zip(n["K"], n["iw"], n["mc"], n["gap_se"], strict=True):
        # both are lower bounds of log p(x) in expectation; q(z | x) is the better proposal:
        # never below plain MC by more than 3 paired standard errors (they meet at large K)
        assert iw >= mc - 3 * se, k
    # measured at K = 1: 9 nats (quick fit), 15 (the tour's fit)
    assert n["gap"][0] > 3 * n["gap_se"][0] and n["gap"][0] > 5.0
    # E L_K is non-decreasing in K (Burda et al. 2016); allow 3 s.e. of the digits' spread
    for key in ("iw", "mc"):
        v, se = n[key], n[key + "_se"]
        assert all(b >= a - 3 * s for a, b, s in zip(v, v[1:], se[1:], strict=False)), key
    assert n["mc"][-1] > n["mc"][0] + 5.0  # the prior's estimate climbs steeply


def test_log_px_curve_groups_are_unbiased_for_one_datum():
    """On a model with a known p(x) (the prior as proposal, Gaussian likelihood), L_K from
    disjoint groups stays below log p(x) and approaches it."""

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", pyro.distributions.Normal(0.0, 1.0).expand([1, 1]).to_event(1))
            pyro.sample("x", pyro.distributions.Normal(z, 1.0).to_event(1), obs=x)

    x = torch.tensor([[0.5]])
    exact = torch.distributions.Normal(0.0, math.sqrt(2.0)).log_prob(x).item()
    curve = tm.log_px_curve(model, tm.prior_guide(1), x, (1, 10, 1000), chunk=250)
    assert curve[1000].item() == pytest.approx(exact, abs=0.02)
    assert curve[1].item() < curve[10].item() < exact + 0.02


def test_score_function_variance_exceeds_reparam_and_falls_like_one_over_s(gradients):
    html, n = gradients
    _assert_figure_and_table(html, 2 * 4)  # two models x four estimators
    assert n["S"] == [1, 16]
    for model in ("coin", "linreg"):
        v = n[model]
        for s in range(2):
            assert v["score, no baseline"][s] > 5 * v["reparameterization"][s], model
        assert v["score, decaying-average baseline"][0] < v["score, no baseline"][0]
        # the mean of S independent estimates has variance Var / S: slope -1 in log-log. With
        # 60 draws a variance's log has s.e. >= sqrt(2 / 60) = 0.18 (more for the score
        # function's heavy tails), so a slope over a 16-fold S has s.e. >= 0.26 / log 16 = 0.09
        for name in ("reparameterization", "score, no baseline"):
            slope = math.log(v[name][1] / v[name][0]) / math.log(16)
            assert slope == pytest.approx(-1.0, abs=0.35), (model, name, slope)
    lin = n["linreg"]  # ten latents: no baseline brings REINFORCE near the pathwise gradient
    assert lin["score, baseline = ELBO (fixed value)"][0] > 100 * lin["reparameterization"][0]


def test_depth_rules_give_valid_depths_and_three_rows(depth):
    html, n = depth
    _assert_figure_and_table(html, 3)
    for rule, label in tm.RULES:
        assert label.split(" ")[0] in html
        r = n[rule]
        assert 0.0 <= r["accuracy"] <= 1.0
        assert len(r["depth_histogram"]) == 8 and sum(r["depth_histogram"]) == 450
        assert 1.0 <= r["mean_depth"] <= 8.0
    assert n["joint_mode"]["blocks_run"] == 8  # the mode needs every depth's p(y | x, z)
    for key in ("posterior_easy", "posterior_hard"):
        assert sum(n[key]) == pytest.approx(1.0, abs=1e-5) and min(n[key]) >= 0


def test_joint_sample_and_mode_rules_of_the_workflow():
    """The workflow's rules on a tiny untrained net: the sampled depth follows p(z) (y summed
    out), the mode's depth maximizes p(y, z | x)."""
    w = REGISTRY["stochastic-depth"]
    wf = start(w, from_keywords(w, blocks=4, width=8, depth_penalty=1.0, max_train=50))
    problem = wf.build()
    x, y = problem.extra["x_test"], problem.extra["y_test"]
    with problem.scope():
        rules = wf.rules(problem, x, y)
    sample, mode = rules["joint_sample"], rules["joint_mode"]
    assert sum(sample["depth_histogram"]) == len(x) and len(sample["depth_histogram"]) == 4
    prior = torch.softmax(-1.0 * torch.arange(4.0), 0)
    freq = torch.tensor(sample["depth_histogram"], dtype=torch.float) / len(x)
    # 450 draws of a categorical: each frequency within 4 binomial s.e. of p(z)
    assert torch.all((freq - prior).abs() <= 4 * (prior * (1 - prior) / len(x)).sqrt())
    with torch.no_grad():
        joint = problem.model.prior_logits[None, :, None] + problem.model.net(x).log_softmax(-1)
    best = joint.reshape(len(x), -1).argmax(-1)
    assert torch.equal(mode["prediction"], best % joint.shape[-1])
    assert mode["mean_depth"] == pytest.approx((best // joint.shape[-1] + 1).float().mean().item())


def test_a_second_tour_refuses_the_same_folder(out, vae, gradients, depth):
    from bayesdl.inference.errors import UserError

    assert all((out / name).exists() for name in tm.FIGURES)
    with pytest.raises(UserError, match="--overwrite"):
        tm.refuse_existing(out.parent)
    tm.refuse_existing(out.parent / "elsewhere")  # a fresh folder is fine
