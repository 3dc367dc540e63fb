"""Bayesian neural network on the bundled digits: every guide learns, the Bayesian ones predict
better than the MLE, sparse VD prunes, the KL approximation is the paper's, and the Monte Carlo
predictive behaves."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bayesdl.fits.svi import fit_problem
from bayesdl.guides.bayesian_net import SparseVD
from bayesdl.models.net_priors import neg_kl_log_uniform
from bayesdl.models.net_weights import Weight
from bayesdl.workflows import metrics
from bayesdl.workflows.bnn import BNN
from bayesdl.workflows.fit_options import from_argv

# the defaults: MLP 64-100-10 on the bundled digits, 3000 minibatches of 128 (285 epochs),
# Adam 1e-2, KL warmed up over 500 steps; every guide with the same split, seed and settings
QUICK: list[str] = []


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Two contended cores: one thread each is several times faster than two."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(n)


def fitted(*argv: str):
    """Fit ``bnn`` with ``argv`` in process; return the workflow, problem and its report."""
    args = from_argv(BNN, [*QUICK, *argv])
    w = BNN(args)
    problem = w.build()
    fit_problem(problem, args.engine, progress=False)
    with problem.scope():  # the fit's own parameters, as bayesdl.fit reads them
        return w, problem, w._report(problem)


@pytest.fixture(scope="module")
def reports():
    """One fit per guide, same split and seed (shared by the accuracy and NLL tests)."""
    import pyro

    out = {}
    for name, argv in GUIDES.items():
        pyro.clear_param_store()
        torch.set_num_threads(1)
        out[name] = fitted(*argv)[2]
    return out


GUIDES = {g: ["--guide", g] for g in ("mle", "map", "meanfield", "dropout", "sparse-vd")}
GUIDES["meanfield-sampled"] = ["--guide", "meanfield", "--no-local-reparam"]


@pytest.mark.parametrize("guide", list(GUIDES))
def test_every_guide_reaches_093_on_digits(reports, guide):
    # 450 test digits: a binomial standard error of 0.01 at 0.95 accuracy
    assert reports[guide]["test"]["accuracy"] >= 0.93


@pytest.mark.parametrize("guide", ["meanfield", "dropout", "sparse-vd"])
def test_bayesian_guides_beat_mle_nll(reports, guide):
    assert reports[guide]["test"]["nll"] < reports["mle"]["test"]["nll"]


def test_sparse_vd_prunes_70_percent(reports):
    r = reports["sparse-vd"]
    assert r["sparsity"]["sparsity"] >= 0.70
    assert r["test"]["accuracy"] >= 0.93
    assert r["test"]["accuracy_pruned_mean_network"] >= 0.93
    per = r["sparsity"]["per_layer"]
    kept = sum(p["kept"] for p in per)
    assert r["sparsity"]["compression"] == pytest.approx(sum(p["weights"] for p in per) / kept)


def test_kl_approximation_matches_monte_carlo():
    """-KL(N(theta, alpha theta^2) || log-uniform) = 0.5 log alpha - E log|1 + sqrt(alpha) eps|
    + C (Molchanov et al. 2017, eq. 13); their fit must match it up to C within 0.01."""
    g = torch.Generator().manual_seed(0)
    log_alpha = torch.linspace(-6, 6, 25, dtype=torch.float64)
    eps = torch.randn(2_000_000, generator=g, dtype=torch.float64)  # MC error ~1e-3
    exact = torch.stack(
        [0.5 * la - (1 + la.exp().sqrt() * eps).abs().log().mean() for la in log_alpha]
    )
    d = neg_kl_log_uniform(log_alpha) - exact
    c = (d.max() + d.min()) / 2
    assert (d - c).abs().max() < 0.01
    # and the constant is the paper's: -KL -> 0 as alpha -> inf, i.e. C = -(gamma + log 2) / 2
    assert c.item() == pytest.approx(-(0.5772156649 + math.log(2)) / 2, abs=0.01)


def _problem(guide: str, *extra: str):
    args = from_argv(BNN, ["--guide", guide, "--hidden", "32", *extra])
    w = BNN(args)
    return w, w.build()


@pytest.mark.parametrize(
    "guide,extra",
    [("meanfield", []), ("meanfield", ["--no-local-reparam"]), ("sparse-vd", []), ("dropout", [])],
)
def test_predictive_probabilities_sum_to_one(guide, extra):
    w, problem = _problem(guide, *extra, "--samples", "7")
    x = problem.extra["split"].x_test[:20]
    with problem.scope():  # its parameters, never another test's of the same name
        p = w.probs(problem, x)
    assert p.shape == (7, 20, 10)
    assert torch.allclose(p.sum(-1), torch.ones(7, 20), atol=1e-5)
    assert metrics.mutual_information(p).min() >= 0


def test_predictive_becomes_deterministic_when_posterior_collapses():
    w, problem = _problem("meanfield", "--samples", "10")
    x = problem.extra["split"].x_test[:50]
    with problem.scope():  # its parameters, never another test's of the same name
        spread = w.probs(problem, x).std(0).max()
        with torch.no_grad():
            problem.model.guide.log_sigma2.fill_(10.0)
        assert w.probs(problem, x).std(0).max() > spread  # wider q, more spread
        with torch.no_grad():
            problem.model.guide.log_sigma2.fill_(-80.0)  # q(theta) -> a point mass at theta
        p = w.probs(problem, x)
        mean_net = w.probs(problem, x, mean_net=True)[0]
        assert torch.allclose(p, mean_net.expand_as(p), atol=1e-6)
        assert metrics.mutual_information(p).max() < 1e-5


def test_dropout_zero_is_the_point_network():
    w, problem = _problem("dropout", "--dropout", "0", "--samples", "5")
    x = problem.extra["split"].x_test[:30]
    with problem.scope():
        p = w.probs(problem, x)
    assert torch.allclose(p, p[:1].expand_as(p), atol=1e-7)


def test_sparse_vd_pruning_rule():
    weight = Weight("w", "", "weight", (3, 2), 0, "linear", 2)
    q = SparseVD([weight], torch.ones(6))
    with torch.no_grad():
        q.log_sigma2.copy_(torch.tensor([2.9, 3.1, -5.0, 0.0, 8.5, 2.0]))
    expected = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    assert torch.equal(q.keep.float(), expected)
    assert q.log_alpha.max() == 8.0  # clipped


def test_cli_fit_evaluate_predict(cli, tmp_path):
    run = tmp_path / "run"
    r = cli(
        "fit",
        "bnn",
        "--guide",
        "sparse-vd",
        "--hidden",
        "64",
        "--steps",
        "300",
        "--lr",
        "1e-2",
        "--kl-warmup",
        "100",
        "--samples",
        "10",
        "--quiet",
        "--out",
        str(run),
    )
    assert r.returncode == 0, r.stderr
    s = json.loads((run / "summary.json").read_text())
    figures = {"bnn_reliability.png", "bnn_entropy_ood.png", "bnn_sparsity_mask.png"}
    assert figures <= set(s["figures"])
    assert all((run / f).stat().st_size > 1000 for f in figures)
    r = cli("evaluate", str(run))
    assert r.returncode == 0, r.stderr
    e = json.loads((run / "evaluation.json").read_text())
    # the restored network predicts as the fitted one did (same test set; MC noise of 10 draws)
    assert e["sparsity"] == s["sparsity"]
    assert e["test"]["accuracy_pruned_mean_network"] == s["test"]["accuracy_pruned_mean_network"]
    assert abs(e["test"]["accuracy"] - s["test"]["accuracy"]) <= 0.03
    assert set(e["ood"]) == {"noise", "inverted", "flipped"}
    assert 0 <= e["ood"]["noise"]["auroc_entropy"] <= 1
    x = np.random.default_rng(0).random((4, 64)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    r = cli("predict", str(run), "--input", str(tmp_path / "x.npz"))
    assert r.returncode == 0, r.stderr
    pred = json.loads(r.stdout)
    assert np.allclose(np.sum(pred["probs"], 1), 1, atol=1e-5) and len(pred["predicted"]) == 4
    np.savez(tmp_path / "bad.npz", x=x[:, :10])
    r = cli("predict", str(run), "--input", str(tmp_path / "bad.npz"))
    assert r.returncode == 2 and "features" in r.stderr


def test_cli_errors(cli, tmp_path):
    out = str(tmp_path / "r")
    r = cli("fit", "bnn", "--data", "mnist", "--data-dir", str(tmp_path), "--out", out)
    assert r.returncode == 2 and "MNIST file" in r.stderr and "missing" in r.stderr
    r = cli("fit", "bnn", "--arch", "lenet5", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "28x28" in r.stderr
    r = cli("fit", "bnn", "--guide", "nope", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "guides" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("guide", ["sparse-vd", "meanfield", "dropout", "mle"])
def test_lenet5_on_mnist_runs(guide):
    """LeNet-5 (conv layers with the same Bayesian layers) trains a few steps on MNIST and
    predicts; needs $BAYESDL_MNIST_DIR."""
    import os

    if not os.environ.get("BAYESDL_MNIST_DIR"):
        pytest.skip("set BAYESDL_MNIST_DIR to the MNIST IDX files")
    args = from_argv(
        BNN,
        [
            "--data",
            "mnist",
            "--arch",
            "lenet5",
            "--guide",
            guide,
            "--steps",
            "30",
            "--samples",
            "3",
        ],
    )
    w = BNN(args)
    problem = w.build()
    r = fit_problem(problem, args.engine, progress=False)
    assert math.isfinite(r.final_elbo)
    with problem.scope():
        p = w.probs(problem, problem.extra["split"].x_test[:64])
    assert p.shape == ((1 if guide == "mle" else 3), 64, 10)
    assert torch.allclose(p.sum(-1), torch.ones(p.shape[:2]), atol=1e-5)
    # 30 steps of batch 128 already beat chance by far
    assert metrics.accuracy(p, problem.extra["split"].y_test[:64]) > 0.3
