"""Any network made Bayesian (:mod:`bayesdl.bnn`): a user's MLP on 1-D regression knows where it
has seen no data, learned noise is recovered, a user's CNN on the digits predicts as well as the
deterministic net with a better NLL, ``exclude`` keeps layers deterministic, sparse VD prunes,
``as_prior`` is exact, Flipout beats plain weight sampling, and the CLI runs ``bnn --net``."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pyro
import pytest
import torch
from torch import nn

import bayesdl
import bayesdl.bnn as bnn
from bayesdl.datasets.bundled import digits
from bayesdl.inference.batching import DataSubsample
from bayesdl.inference.diagnostics import gradient_draws
from bayesdl.workflows import metrics

warnings.filterwarnings("ignore", message=".*outside of inference.*")


def truth(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(2 * x)


def gap_data(n: int, noise: float = 0.1, seed: int = 0):
    """Inputs in [-3, -1] and [1, 3], ``y = sin(2x) + noise``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.cat(
        [torch.rand(n // 2, generator=g) * 2 - 3, torch.rand(n - n // 2, generator=g) * 2 + 1]
    )
    return x[:, None], truth(x) + noise * torch.randn(n, generator=g)


def mlp(d_in: int = 1, d_out: int = 1, width: int = 50) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(d_in, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, d_out),
    )


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 16, 10),
    )


@pytest.fixture(scope="module")
def split():
    return digits()


# ----------------------------------------------------------------------------- regression


def test_mlp_regression_mean_follows_data_and_sd_grows_away_from_them():
    x, y = gap_data(100)
    net = mlp()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    bnet = bnn.bayesian(net, likelihood="gaussian", noise=0.1)
    post = bayesdl.fit(bnet, data={"x": x, "y": y}, steps=2000, progress=False)
    # the user's module is untouched and still usable
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net(x).shape == (100, 1)
    inside = torch.cat([torch.linspace(-3, -1, 20), torch.linspace(1, 3, 20)])[:, None]
    u = bnn.uncertainty(post, inside, num_samples=200)
    # 100 points with noise 0.1: the mean is within a noise sd of the truth
    assert (u["mean"] - truth(inside[:, 0])).pow(2).mean().sqrt() < 0.12
    far = bnn.uncertainty(post, torch.tensor([[-6.0], [6.0]]), num_samples=200)
    assert far["sd"].mean() > 2 * u["sd"].mean()
    # sd^2 = noise^2 + model^2; the noise part is the fixed 0.1, the model part grows outside
    assert torch.allclose(u["sd"] ** 2, u["sd_noise"] ** 2 + u["sd_model"] ** 2, rtol=1e-4)
    assert torch.allclose(u["sd_noise"], torch.tensor(0.1))
    assert far["sd_model"].min() > u["sd_model"].max()
    draws = post.predict({"x": inside}, num_samples=30)["y"]
    assert draws.shape == (30, 40)


def test_learned_noise_is_recovered_within_25_percent():
    x, y = gap_data(1000)
    post = bayesdl.fit(
        bnn.bayesian(mlp(), likelihood="gaussian", noise="learned"),
        data={"x": x, "y": y},
        steps=1500,
        progress=False,
    )
    assert post.params["sigma"].item() == pytest.approx(0.1, rel=0.25)


def test_predicted_noise_follows_the_data():
    """Heteroskedastic: sd 0.05 left of 0, 0.3 right of it; the net's second output learns it."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(600, generator=g) * 6 - 3
    y = 0.5 * x + torch.where(x < 0, 0.05, 0.3) * torch.randn(600, generator=g)
    post = bayesdl.fit(
        bnn.bayesian(mlp(d_out=2), likelihood="gaussian", noise="predicted", guide="map"),
        data={"x": x[:, None], "y": y},
        steps=1500,
        progress=False,
    )
    u = bnn.uncertainty(post, torch.tensor([[-2.0], [2.0]]), num_samples=10)
    assert u["sd_noise"][0] == pytest.approx(0.05, rel=0.4)
    assert u["sd_noise"][1] == pytest.approx(0.3, rel=0.3)


# ----------------------------------------------------------------------------- classification


def test_small_cnn_on_digits_matches_the_deterministic_net_with_better_nll(split):
    data = {"x": split.x_train, "y": split.y_train}
    settings = {"steps": 500, "batch_size": 128, "progress": False}
    det = bayesdl.fit(
        bnn.bayesian(small_cnn(), likelihood="categorical", guide="mle"), data=data, **settings
    )
    with torch.no_grad():
        p_det = bnn.mean_net(det)(split.x_test).softmax(-1)
    post = bayesdl.fit(
        bnn.bayesian(
            small_cnn(), likelihood="categorical", guide="concrete-dropout", prior_scale=30.0
        ),
        data=data,
        **settings,
    )
    # the ensemble's NLL is a Monte Carlo estimate with a heavy tail (a few digits where most
    # draws miss): over seeds it was 0.052-0.113 with 50 draws (mean 0.063, 12 seeds) and
    # 0.055-0.078 with 200 (6 seeds), against the deterministic net's 0.078: 300 draws
    torch.manual_seed(0)
    u = bnn.uncertainty(post, split.x_test, num_samples=300)
    acc, acc_det = metrics.accuracy(u["probs"], split.y_test), metrics.accuracy(p_det, split.y_test)
    assert acc >= acc_det - 0.02
    assert metrics.nll(u["probs"], split.y_test) < metrics.nll(p_det, split.y_test)
    # entropy = expected entropy (aleatoric) + mutual information (epistemic)
    assert torch.allclose(u["entropy"], u["expected_entropy"] + u["mutual_information"], atol=1e-5)
    assert (u["mutual_information"] > 0).all()
    assert torch.allclose(u["probs"].sum(-1), torch.ones(len(split.x_test)), atol=1e-5)


def test_exclude_and_only_keep_named_layers_deterministic(split):
    net = small_cnn()
    bnet = bnn.bayesian(net, likelihood="categorical", exclude=["1", nn.Linear])
    assert [w.name for w in bnet.weights] == ["4.weight", "4.bias"]
    assert [w.name for w in bnn.bayesian(net, likelihood="categorical", only="7").weights] == [
        "7.weight",
        "7.bias",
    ]
    by_class = bnn.bayesian(net, likelihood="categorical", exclude="Conv2d").weights
    assert {w.module for w in by_class} == {"7"}
    post = bayesdl.fit(
        bnet, data={"x": split.x_train[:256], "y": split.y_train[:256]}, steps=30, progress=False
    )
    theta = post.sample(4)["theta"]
    assert theta.shape == (4, 32 * 16 * 9 + 32)
    fitted = bnn.mean_net(post)
    # the excluded layers are trained as point estimates, and the user's net is unchanged
    assert not torch.equal(fitted[1].weight, net[1].weight)
    assert not torch.equal(fitted[7].weight, net[7].weight)
    # a deterministic layer is the same in every posterior draw
    f = post.predict({"x": split.x_test[:5]}, num_samples=3)["f"]
    assert f.shape == (3, 5, 10) and f.std(0).max() > 0
    with pytest.raises(ValueError, match="no parameter"):
        bnn.bayesian(net, likelihood="categorical", only="nothing")


def test_sparse_vd_on_a_user_net_prunes_and_keeps_accuracy(split):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))
    post = bayesdl.fit(
        bnn.bayesian(net, likelihood="categorical", guide="sparse-vd"),
        data={"x": split.x_train, "y": split.y_train},
        steps=1000,
        batch_size=128,
        kl_warmup=300,
        progress=False,
    )
    sp = bnn.sparsity(post)
    assert sp["sparsity"] > 0.8 and sp["compression"] > 5
    pruned = bnn.mean_net(post)
    assert (pruned[0].weight == 0).float().mean() > 0.8
    with torch.no_grad():
        p = pruned(split.x_test).softmax(-1)
    assert metrics.accuracy(p, split.y_test) > 0.93


def test_as_prior_carries_means_and_sds_exactly():
    x, y = gap_data(64)
    post = bayesdl.fit(
        bnn.bayesian(mlp(width=8), likelihood="gaussian"),
        data={"x": x, "y": y},
        steps=50,
        progress=False,
    )
    q = post.model.guide
    prior = post.as_prior()
    nxt = bnn.bayesian(mlp(width=8), likelihood="gaussian", prior=prior)
    assert torch.equal(nxt.prior.mu0, q.loc.detach())
    assert torch.equal(nxt.prior.sigma0, q.sigma().detach())
    assert torch.equal(nxt.guide.loc.detach(), q.loc.detach())  # and the next fit starts there
    # KL(q || p) is 0 where q equals the carried prior
    with torch.no_grad():
        nxt.guide.log_sigma.copy_(q.log_sigma)
        assert nxt.guide.kl(nxt.prior, None).abs() < 1e-3
    with pytest.raises(ValueError, match="Gaussian posterior"):
        bnn.as_prior(bnn.bayesian(mlp(width=8), likelihood="gaussian", guide="map"))


def test_flipout_gradient_variance_is_below_weight_sampling_on_a_dense_layer():
    torch.manual_seed(0)
    data = {"x": torch.randn(128, 20), "y": torch.randint(0, 5, (128,))}
    variance = {}
    for name, kw in {
        "weights": {"guide": "meanfield", "local_reparam": False},
        "local": {"guide": "meanfield"},
        "flipout": {"guide": "flipout"},
    }.items():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(20, 50), nn.ReLU(), nn.Linear(50, 5))
        bnet = bnn.bayesian(net, likelihood="categorical", init_scale=0.1, **kw)
        with pyro.get_param_store().scope():
            draws = gradient_draws(bnet, bnet.guide, data, "reparam", draws=200)
        variance[name] = draws["model.guide.loc"][:, : 20 * 50].var(0).mean().item()
    assert variance["flipout"] < 0.9 * variance["weights"]
    assert variance["local"] < variance["flipout"]


# ----------------------------------------------------------------------------- the pieces


def test_likelihood_is_scaled_by_n_over_b_under_minibatches():
    x, y = gap_data(100)
    bnet = bnn.bayesian(mlp(width=4), likelihood="gaussian", noise=0.1)
    sub = DataSubsample("data")
    sub.indices = torch.arange(20)
    with torch.no_grad():
        gtr = pyro.poutine.trace(bnet.guide).get_trace()
        tr = pyro.poutine.trace(sub(pyro.poutine.replay(bnet, trace=gtr))).get_trace(x=x, y=y)
    assert tr.nodes["y"]["scale"] == pytest.approx(5.0)
    assert tr.nodes["y"]["value"].shape == (20,)
    assert tr.nodes["kl"]["scale"] == 1.0  # the global KL is not scaled


def _toy(kind: str):
    torch.manual_seed(0)
    x = torch.randn(40, 4)
    if kind == "categorical":
        return x, torch.randint(0, 3, (40,)), 3
    if kind == "bernoulli":
        return x, (x[:, 0] > 0).float(), 1
    if kind == "poisson":
        return x, torch.poisson(torch.exp(x[:, 0])), 1
    return x, x.sum(1), 1


@pytest.mark.parametrize("guide", bnn.GUIDES)
@pytest.mark.parametrize("likelihood", ["categorical", "bernoulli", "gaussian", "poisson"])
def test_every_guide_and_likelihood_fits_and_predicts(guide, likelihood):
    x, y, k = _toy(likelihood)
    bnet = bnn.bayesian(mlp(4, k, 8), likelihood=likelihood, guide=guide)
    post = bayesdl.fit(bnet, data={"x": x, "y": y}, steps=20, progress=False)
    assert math.isfinite(post.elbo[-1])
    draws = post.predict({"x": x[:6]}, num_samples=5)
    assert draws["y"].shape == (5, 6)
    u = bnn.uncertainty(post, x[:6], num_samples=5)
    key = "mutual_information" if likelihood in ("categorical", "bernoulli") else "sd_model"
    assert u[key].shape == (6,) and torch.isfinite(u[key]).all()


@pytest.mark.parametrize(
    "prior",
    [
        "normal",
        "scale-mixture",
        "log-uniform",
        lambda name, p: pyro.distributions.Laplace(0.0, 1.0),
        lambda name, p: pyro.distributions.Normal(torch.zeros_like(p), 2.0),
    ],
)
def test_every_prior_fits(prior):
    x, y, _ = _toy("gaussian")
    bnet = bnn.bayesian(mlp(4, 1, 8), likelihood="gaussian", prior=prior)
    post = bayesdl.fit(bnet, data={"x": x, "y": y}, steps=20, progress=False)
    assert math.isfinite(post.elbo[-1])


def test_embeddings_layernorm_and_conv1d_nets():
    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.norm = nn.LayerNorm(8)
            self.conv = nn.Conv1d(8, 6, 3, padding=1)
            self.head = nn.Linear(6, 2)

        def forward(self, tokens):
            h = self.norm(self.emb(tokens)).transpose(1, 2)  # [N, 8, T]
            return self.head(torch.relu(self.conv(h)).mean(-1))

    torch.manual_seed(0)
    tokens = torch.randint(0, 10, (32, 5))
    y = (tokens[:, 0] > 4).long()
    for guide in ("meanfield", "flipout", "mc-dropout"):
        bnet = bnn.bayesian(Seq(), likelihood="categorical", guide=guide, exclude="LayerNorm")
        assert "norm.weight" not in {w.name for w in bnet.weights}
        post = bayesdl.fit(bnet, data={"x": tokens, "y": y}, steps=20, progress=False)
        assert post.predict({"x": tokens[:3]}, num_samples=4)["y"].shape == (4, 3)


def test_guide_can_be_switched_and_the_fit_saved_and_loaded(tmp_path):
    x, y = gap_data(64)
    bnet = bnn.bayesian(mlp(width=8), likelihood="gaussian")
    post = bayesdl.fit(bnet, data={"x": x, "y": y}, guide="flipout", steps=50, progress=False)
    assert post.model.guide_name == "flipout" and bnet.guide_name == "meanfield"
    post.save(tmp_path / "run")
    again = bayesdl.load(tmp_path / "run", model=bnet)
    assert again.model.guide_name == "flipout"
    assert torch.equal(again.model.guide.loc, post.model.guide.loc)
    assert again.params["sigma"] == post.params["sigma"]


# ----------------------------------------------------------------------------- the command line


def test_cli_fit_evaluate_predict_a_users_net(tmp_path):
    import bayesdl.cli as cli

    (tmp_path / "mynet.py").write_text(
        "from torch import nn\n\n\ndef make_net():\n"
        "    return nn.Sequential(nn.Linear(1, 32), nn.ReLU(), nn.Linear(32, 1))\n"
    )
    x, y = gap_data(200)
    np.savez(
        tmp_path / "train.npz",
        x=x.numpy(),
        y=y.numpy(),
        x_test=x[:50].numpy(),
        y_test=y[:50].numpy(),
    )
    np.savetxt(
        tmp_path / "train.csv",
        np.c_[x.numpy(), y.numpy()],
        delimiter=",",
        header="x,y",
        comments="",
    )
    np.savez(tmp_path / "new.npz", x=np.array([[-2.0], [0.0], [6.0]], dtype=np.float32))
    run = tmp_path / "run"
    net = f"{tmp_path / 'mynet.py'}:make_net"
    argv = ["fit", "bnn", "--net", net, "--likelihood", "gaussian", "--prior", "normal"]
    argv += ["--guide", "flipout", "--data", str(tmp_path / "train.npz"), "--steps", "800"]
    assert cli.main([*argv, "--quiet", "--out", str(run)]) == 0
    s = json.loads((run / "summary.json").read_text())
    assert (
        s["figures"] == ["bnn_regression.png"]
        and (run / "bnn_regression.png").stat().st_size > 1000
    )
    assert s["test"]["rmse"] < 0.3 and s["bayesian_net"]["guide"] == "flipout"
    assert cli.main(["evaluate", str(run)]) == 0
    e = json.loads((run / "evaluation.json").read_text())
    assert set(e["test"]) >= {"rmse", "log_likelihood", "sd_noise", "sd_model", "coverage_95"}
    assert (
        cli.main(
            [
                "predict",
                str(run),
                "--input",
                str(tmp_path / "new.npz"),
                "--output",
                str(tmp_path / "p.json"),
            ]
        )
        == 0
    )
    pred = json.loads((tmp_path / "p.json").read_text())
    assert len(pred["mean"]) == 3 and pred["sd_model"][2] > pred["sd_model"][0]
    csv = [
        "fit",
        "bnn",
        "--net",
        net,
        "--likelihood",
        "gaussian",
        "--data",
        str(tmp_path / "train.csv"),
    ]
    csv += [
        "--x-cols",
        "x",
        "--y-col",
        "y",
        "--steps",
        "50",
        "--quiet",
        "--out",
        str(tmp_path / "csv"),
    ]
    assert cli.main(csv) == 0


def test_cli_builtin_bnn_with_a_new_guide_and_errors(tmp_path, capsys):
    import bayesdl.cli as cli

    run = tmp_path / "run"
    assert (
        cli.main(
            ["fit", "bnn", "--guide", "flipout", "--steps", "100", "--quiet", "--out", str(run)]
        )
        == 0
    )
    s = json.loads((run / "summary.json").read_text())
    assert s["test"]["accuracy"] > 0.6 and s["bayesian_net"]["guide"] == "flipout"
    assert {"bnn_reliability.png", "bnn_entropy_ood.png"} <= set(s["figures"])
    (tmp_path / "bad.py").write_text("def make_net():\n    return 3\n")
    bad = ["fit", "bnn", "--net", f"{tmp_path / 'bad.py'}:make_net", "--out", str(tmp_path / "b")]
    assert cli.main(bad) == 2
    assert "not an nn.Module" in capsys.readouterr().err


# ----------------------------------------------------------------------------- learned dropout


def exact_neg_kl(alpha: float) -> float:
    """``-KL(N(theta, alpha theta^2) || log-uniform) = 0.5 log alpha - E log |xi| - (gamma + log 2)
    / 2``, ``xi ~ N(1, alpha)``, in closed form: ``xi^2 / alpha`` is a noncentral chi-square with
    one degree of freedom and ``lambda = 1 / alpha``, a Poisson(``lambda / 2``) mixture of central
    ones, so ``E log xi^2 = log(2 alpha) + E psi(1/2 + J)``, ``J ~ Poisson(1 / (2 alpha))``."""
    rate = 1 / (2 * alpha)
    j = torch.arange(0, int(rate + 60 * math.sqrt(rate) + 60), dtype=torch.float64)
    pmf = torch.exp(j * math.log(rate) - rate - torch.lgamma(j + 1))
    e_psi = (pmf * torch.digamma(j + 0.5)).sum().item()
    return -0.5 * (2 * math.log(2) + 0.5772156649015329 + e_psi)


def test_gaussian_dropout_kl_is_kingmas_fit_of_the_exact_kl():
    from bayesdl.models.net_priors import neg_kl_gaussian_dropout, neg_kl_log_uniform

    alphas = [1e-4, 1e-3, 0.01, 0.1, 0.5, 1.0]
    la = torch.tensor([math.log(a) for a in alphas], dtype=torch.float64)
    ours = neg_kl_gaussian_dropout(la)
    c1, c2, c3 = 1.16145124, -1.50204118, 0.58629921  # Kingma et al. 2015, eq. 7
    for a, v in zip(alphas, ours.tolist(), strict=True):
        paper = 0.5 * math.log(a) + c1 * a + c2 * a**2 + c3 * a**3
        assert v == pytest.approx(paper - 0.6351814, abs=1e-6)  # constant: KL -> 0 at infinity
        # the paper's fit of the exact KL is good to 0.04 nats per weight on (0, 1] ...
        assert abs(v - exact_neg_kl(a)) < 0.04
    # ... and tends to it as alpha -> 0 (-KL ~ 0.5 log alpha + alpha / 2 - const)
    assert abs(ours[0].item() - exact_neg_kl(1e-4)) < 1e-4
    assert exact_neg_kl(1e-4) == pytest.approx(0.5 * math.log(1e-4) + 0.5e-4 - 0.6351814, abs=1e-5)
    # Molchanov et al.'s fit of the same KL (sparse VD) agrees within the two fits' errors
    assert (ours - neg_kl_log_uniform(la)).abs().max() < 0.045
    assert exact_neg_kl(1.0) == pytest.approx(
        neg_kl_log_uniform(torch.tensor(0.0)).item(), abs=0.01
    )


def _digits_fit(split, guide: str, steps: int = 500, seed: int = 0, **kw):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))
    bnet = bnn.bayesian(net, likelihood="categorical", guide=guide, dropout=0.05, **kw)
    data = {"x": split.x_train, "y": split.y_train}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bayesdl.fit(bnet, data=data, steps=steps, batch_size=128, progress=False, seed=seed)
    return post, bnn.uncertainty(post, split.x_test, num_samples=50)


def test_gaussian_dropout_learns_rates_in_range_and_predicts_like_dropout(split):
    _, u_mc = _digits_fit(split, "mc-dropout")
    acc_mc = metrics.accuracy(u_mc["probs"], split.y_test)
    for per in ("layer", "weight"):
        post, u = _digits_fit(split, "gaussian-dropout", alpha_per=per)
        q = post.model.guide
        assert q.log_alpha.numel() == (2 if per == "layer" else 64 * 100 + 100 * 10)
        rates = q.rates()
        assert list(rates) == ["0.weight", "2.weight"]
        for p in rates.values():  # started at 0.05; alpha in (0, 1] is p in (0, 0.5]
            assert 0.1 < p <= 0.5
        alpha = q.log_alpha.exp()
        assert (alpha > 0).all() and (alpha <= 1).all()
        # measured (500 steps, seeds 0-3): 0.967-0.984 (per layer or weight), mc-dropout 0.971-0.982
        assert metrics.accuracy(u["probs"], split.y_test) >= acc_mc - 0.02
        assert u["mutual_information"].mean() > 0.05


def test_dropconnect_trains_and_has_predictive_spread(split):
    post, u = _digits_fit(split, "dropconnect", steps=300)
    assert post.model.guide.per == "weight"
    assert metrics.accuracy(u["probs"], split.y_test) > 0.93
    # a fresh Bernoulli mask on every weight per draw: the draws disagree
    assert u["mutual_information"].mean() > 1e-3 and (u["mutual_information"] >= 0).all()


KL_MODELS = """
import pyro
import pyro.distributions as dist
import torch
from torch import nn

import bayesdl.bnn

bnet = bayesdl.bnn.bayesian(
    nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1)), likelihood="gaussian", noise=0.1
)


def model(x, y=None):
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(x @ w, 0.1), obs=y)
    unit = dist.Unit(-0.5 * (w**2).sum())  # a closed-form term added by hand
    pyro.sample("kl", unit, obs=unit.sample(), infer={"is_kl": True})
"""


def test_predictions_hold_no_kl_site(tmp_path):
    import bayesdl.cli as cli

    x, y, _ = _toy("categorical")
    bnet = bnn.bayesian(mlp(4, 3, 8), likelihood="categorical", guide="gaussian-dropout")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bayesdl.fit(bnet, data={"x": x, "y": y}, steps=5, progress=False)
    draws = post.predict({"x": x[:3]}, num_samples=4)
    assert set(draws) == {"theta", "f", "y"}  # the model's "kl" site is an ELBO term
    with pytest.raises(ValueError, match="Gaussian posterior"):  # its biases are points
        bnn.as_prior(post)
    # bayesdl predict, for a network from a file and for a model with its own is_kl site
    (tmp_path / "m.py").write_text(KL_MODELS)
    x2 = torch.randn(30, 2)
    np.savez(tmp_path / "d.npz", x=x2.numpy(), y=(x2 @ torch.tensor([1.0, -1.0])).numpy())
    np.savez(tmp_path / "new.npz", x=x2[:3].numpy())
    for name, sites in (("bnet", {"theta", "f", "y"}), ("model", {"w", "y"})):
        run, out = tmp_path / name, tmp_path / f"{name}.json"
        fit = ["fit", f"{tmp_path / 'm.py'}:{name}", "--data", str(tmp_path / "d.npz")]
        assert cli.main([*fit, "--steps", "30", "--quiet", "--out", str(run)]) == 0
        new = str(tmp_path / "new.npz")
        assert cli.main(["predict", str(run), "--input", new, "--output", str(out)]) == 0
        assert set(json.loads(out.read_text())) == {"num_samples", *sites}  # every site but kl


def test_cli_gaussian_dropout_reports_rates_evaluates_and_predicts(tmp_path):
    import bayesdl.cli as cli

    run = tmp_path / "run"
    argv = ["fit", "bnn", "--guide", "gaussian-dropout", "--steps", "50", "--quiet"]
    assert cli.main([*argv, "--out", str(run)]) == 0
    s = json.loads((run / "summary.json").read_text())
    net = s["bayesian_net"]
    assert net["guide"] == "gaussian-dropout" and net["prior"] == "log-uniform"
    assert net["dropout_rates_learned"] and net["alpha_per"] == "layer"
    assert set(net["dropout_rates"]) == {"1.weight", "3.weight"}
    for name, p in net["dropout_rates"].items():
        a = net["alpha"][name]
        assert 0 < p < 0.5 and p == pytest.approx(a / (1 + a), rel=1e-5)
    assert cli.main(["evaluate", str(run)]) == 0
    assert "dropout_rates" in json.loads((run / "evaluation.json").read_text())["bayesian_net"]
    np.savez(tmp_path / "new.npz", x=np.zeros((2, 64), dtype=np.float32))
    out = tmp_path / "p.json"
    assert (
        cli.main(["predict", str(run), "--input", str(tmp_path / "new.npz"), "--output", str(out)])
        == 0
    )
    pred = json.loads(out.read_text())
    assert "kl" not in pred and len(pred["probs"]) == 2
    w = tmp_path / "w"
    assert cli.main([*argv, "--alpha-per", "weight", "--out", str(w)]) == 0
    assert json.loads((w / "summary.json").read_text())["bayesian_net"]["alpha_per"] == "weight"
