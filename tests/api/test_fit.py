"""The Python API as a user meets it: ``bayesdl.fit`` / ``Posterior`` / ``bayesdl.load``.

No test here clears Pyro's param store: every fit must own its parameters by itself.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import run_cli
from pyro.infer import TraceMeanField_ELBO

import bayesdl
from bayesdl.inference.elbo import Estimator
from bayesdl.inference.estimators import ESTIMATORS, make_estimator
from bayesdl.models import linear_regression as exact_linreg

S0, SIGMA = 1.0, 0.5  # prior sd of the weights, known noise sd


def regression(x, y=None):
    """``theta ~ N(0, s0^2 I)``, ``y ~ N(x theta, sigma^2)``."""
    theta = pyro.sample("theta", dist.Normal(0.0, S0).expand([x.shape[1]]).to_event(1))
    with pyro.plate("data", x.shape[0]) as idx:
        mean = pyro.deterministic("mean", x[idx] @ theta)
        pyro.sample("y", dist.Normal(mean, SIGMA), obs=None if y is None else y[idx])


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    x[:, 1] = 0.8 * x[:, 0] + 0.6 * x[:, 1]  # correlated inputs: a correlated posterior
    y = x @ torch.tensor([1.0, -0.5]) + SIGMA * torch.randn(n, generator=g)
    return x, y


@pytest.fixture(scope="module")
def fitted():
    x, y = _data()
    post = bayesdl.fit(
        regression, data={"x": x, "y": y}, guide="auto-mvn", steps=1500, lr=0.05, progress=False
    )
    mu, cov = exact_linreg.posterior(x, y, prior_loc=0.0, prior_scale=S0, noise_scale=SIGMA)
    return post, x, y, mu.double(), cov.double()


def test_user_regression_matches_closed_form_posterior(fitted):
    post, _, _, mu, cov = fitted
    sd = cov.diagonal().sqrt()
    s = post.summary(num_samples=4000)["theta"]
    mean, std = torch.tensor(s["mean"]), torch.tensor(s["std"])
    assert ((mean - mu).abs() < 0.5 * sd).all(), (mean, mu, sd)
    assert ((std / sd - 1).abs() < 0.3).all(), (std, sd)
    for q in ("5%", "50%", "95%"):
        assert len(s[q]) == 2
    draws = post.sample(4000)["theta"]
    assert draws.shape == (4000, 2)
    emp = torch.cov(draws.double().T)
    corr = emp[0, 1] / emp.diagonal().prod().sqrt()
    exact_corr = cov[0, 1] / cov.diagonal().prod().sqrt()
    assert abs(corr - exact_corr) < 0.1  # auto-mvn keeps the posterior correlation


def test_deterministic_sites_are_summarized_not_observed(fitted, tmp_path):
    post = fitted[0]
    s = post.summary(num_samples=200)
    assert "mean" in s and len(s["mean"]["mean"]) == 40
    assert "y" not in s
    x, y = _data(n=20)
    post = bayesdl.fit(regression, data={"x": x, "y": y}, steps=30, progress=False, out=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "mean" in summary["posterior"] and "theta" in summary["posterior"]
    sites = summary["user_model"]
    assert sites["observed_sites"] == ["y"] and sites["deterministic_sites"] == ["mean"]


def test_predict_matches_exact_predictive(fitted):
    post, x, y, mu, cov = fitted
    x_new = torch.tensor([[1.0, 0.5], [-2.0, 1.0]])
    draws = post.predict({"x": x_new}, num_samples=20000)
    assert draws["y"].shape == (20000, 2) and draws["theta"].shape == (20000, 2)
    assert "mean" in draws  # deterministic sites too
    exact = exact_linreg.predictive(x_new, mu, cov, SIGMA)
    m, s = draws["y"].double().mean(0), draws["y"].double().std(0)
    assert torch.allclose(m, exact.mean, atol=0.25 * exact.stddev.max()), (m, exact.mean)
    assert ((s / exact.stddev - 1).abs() < 0.15).all(), (s, exact.stddev)


def test_predict_finds_the_observed_arguments_once(fitted, monkeypatch):
    """Finding them runs the model on all the training data (seconds a call on MNIST): once
    per posterior, not on every ``predict``; the second call draws ``y`` as the first."""
    import bayesdl.fits.guide_posterior as posterior_mod

    post = fitted[0]
    post._observed = None
    calls = []
    real = posterior_mod.observation_keys

    def counting(model, data):
        calls.append(1)
        return real(model, data)

    monkeypatch.setattr(posterior_mod, "observation_keys", counting)
    x_new = torch.tensor([[1.0, 0.5]])
    for _ in range(3):
        draws = post.predict({"x": x_new}, num_samples=10)
        assert draws["y"].shape == (10, 1)
    assert len(calls) == 1


def test_second_fit_with_same_guide_class_and_sites_leaves_first_unchanged(fitted):
    post = fitted[0]
    before = post.summary(num_samples=2000)["theta"]["mean"]
    x, y = _data(seed=1)
    other = bayesdl.fit(
        regression, data={"x": x, "y": -3 * y}, guide="auto-mvn", steps=300, progress=False
    )
    assert other.summary(num_samples=500)["theta"]["mean"][0] < 0
    pyro.set_rng_seed(0)
    after = post.summary(num_samples=2000)["theta"]["mean"]
    assert after == pytest.approx(before, abs=0.05)
    assert after[0] > 0.5


def test_global_param_store_is_neither_cleared_nor_used():
    pyro.get_param_store().clear()
    mine = pyro.param("users_own", torch.tensor(3.0))
    x, y = _data()
    bayesdl.fit(regression, data={"x": x, "y": y}, steps=20, progress=False)
    assert pyro.param("users_own") is mine
    assert list(pyro.get_param_store().keys()) == ["users_own"]
    pyro.get_param_store().clear()


def test_coin_by_name_gives_exact_posterior_mean():
    post = bayesdl.fit("coin", heads=6, tails=4, progress=False)
    mean = post.summary(num_samples=4000)["pi"]["mean"]
    sd = math.sqrt(7 * 5 / (12**2 * 13))
    assert mean == pytest.approx(7 / 12, abs=0.15 * sd)


def test_named_model_keyword_errors_are_value_errors():
    with pytest.raises(ValueError, match="unknown option 'nonsense'"):
        bayesdl.fit("coin", heads=6, tails=4, nonsense=1)
    with pytest.raises(ValueError, match="--lr must be a positive"):
        bayesdl.fit("coin", heads=6, tails=4, lr=-1, progress=False)
    with pytest.raises(ValueError, match="unknown model"):
        bayesdl.fit("no-such-model")


def test_model_params_are_reported(tmp_path):
    def noisy(x, y=None):
        sigma = pyro.param("sigma", torch.tensor(1.0), constraint=dist.constraints.positive)
        b = pyro.sample("b", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(b * x, sigma), obs=y)

    x = torch.linspace(-1, 1, 200)
    y = 2 * x + 0.3 * torch.randn(200, generator=torch.Generator().manual_seed(0))
    post = bayesdl.fit(
        noisy, data={"x": x, "y": y}, steps=800, lr=0.05, progress=False, out=tmp_path / "run"
    )
    assert set(post.params) == {"sigma"}  # the model's, not the guide's
    assert post.params["sigma"].item() == pytest.approx(0.3, rel=0.15)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["params"]["sigma"] == pytest.approx(post.params["sigma"].item(), rel=1e-5)
    assert len(post.elbo) >= 2 and post.elbo[-1] > post.elbo[0]


def test_untrained_network_warns():
    net = torch.nn.Linear(1, 1)

    def model(x, y=None):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(net(x[:, None]).squeeze(-1), scale), obs=y)

    x = torch.randn(30)
    with pytest.warns(UserWarning, match=r"\(1, 1\).*pyro.module"):
        bayesdl.fit(model, data={"x": x, "y": 2 * x}, steps=5, progress=False)

    def registered(x, y=None):
        pyro.module("net", net)
        model(x, y)

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        bayesdl.fit(registered, data={"x": x, "y": 2 * x}, steps=5, progress=False)


def test_clear_errors_for_bad_data_and_guides():
    x, y = _data()
    with pytest.raises(ValueError, match="'z'.*not an argument"):
        bayesdl.fit(regression, data={"x": x, "y": y, "z": x}, steps=5, progress=False)

    def empty_guide(x, y=None):
        pyro.sample("theta", dist.Normal(0.0, 1.0).expand([2]).to_event(1))

    with pytest.raises(ValueError, match="no parameters"):
        bayesdl.fit(regression, data={"x": x, "y": y}, guide=empty_guide, steps=5, progress=False)

    def prior_only():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.warns(UserWarning, match="no observed site"):
        bayesdl.fit(prior_only, steps=5, progress=False)


def test_registered_pyro_elbo_returns_exactly_pyros_loss():
    ESTIMATORS["mf-test"] = lambda k, vec, mpn: Estimator(
        "mf-test", TraceMeanField_ELBO(num_particles=k, vectorize_particles=vec)
    )
    try:

        def model():
            pyro.sample("z", dist.Normal(0.0, 1.0))

        def guide():
            loc = pyro.param("loc", torch.tensor(0.7))
            pyro.sample("z", dist.Normal(loc, 0.5))

        est = make_estimator("mf-test")
        with pyro.get_param_store().scope():
            losses = torch.stack([est.loss(model, guide).detach() for _ in range(20)])
            pyro_loss = TraceMeanField_ELBO().differentiable_loss(model, guide)
        exact_kl = torch.distributions.kl_divergence(dist.Normal(0.7, 0.5), dist.Normal(0.0, 1.0))
        assert losses.max() - losses.min() < 1e-6  # analytic KL: no Monte Carlo noise
        assert losses[0].item() == pytest.approx(pyro_loss.item(), abs=1e-6)
        assert losses[0].item() == pytest.approx(exact_kl.item(), abs=1e-6)
        post = bayesdl.fit(
            model, guide=guide, estimator="mf-test", steps=200, lr=0.05, progress=False
        )
        assert post.summary(num_samples=2000)["z"]["mean"] == pytest.approx(0.0, abs=0.1)
    finally:
        del ESTIMATORS["mf-test"]


def test_renyi_elbo_trains_through_its_own_gradients():
    from pyro.infer import RenyiELBO

    ESTIMATORS["renyi-test"] = lambda k, vec, mpn: Estimator(
        "renyi-test", RenyiELBO(alpha=0.5, num_particles=max(k, 2))
    )
    try:
        x, y = _data()
        post = bayesdl.fit(
            regression,
            data={"x": x, "y": y},
            estimator="renyi-test",
            steps=300,
            lr=0.05,
            progress=False,
        )
        assert post.summary(num_samples=500)["theta"]["mean"][0] > 0.5
    finally:
        del ESTIMATORS["renyi-test"]


MODEL_FILE = '''
import pyro
import pyro.distributions as dist


def model(x, y=None):
    """A line with known noise."""
    b = pyro.sample("b", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(x)) as idx:
        pyro.sample("y", dist.Normal(b * x[idx], 0.5), obs=None if y is None else y[idx])
'''


def test_save_load_and_cli_evaluate_a_python_run(tmp_path):
    import importlib.util

    path = tmp_path / "line_model.py"
    path.write_text(MODEL_FILE)
    spec = importlib.util.spec_from_file_location("line_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x = torch.linspace(-1, 1, 50)
    y = 1.5 * x
    post = bayesdl.fit(module.model, data={"x": x, "y": y}, steps=300, lr=0.05, progress=False)
    run = post.save(tmp_path / "run")
    assert (run / "checkpoint.pt").exists() and (run / "data.npz").exists()
    with pytest.raises(ValueError, match="already holds a run"):
        post.save(tmp_path / "run")

    back = bayesdl.load(run)
    a = post.summary(num_samples=2000)["b"]
    b = back.summary(num_samples=2000)["b"]
    assert b["mean"] == pytest.approx(a["mean"], abs=0.02)
    assert b["std"] == pytest.approx(a["std"], rel=0.15)

    proc = run_cli("evaluate", str(run))
    assert proc.returncode == 0, proc.stderr
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["posterior"]["b"]["mean"] == pytest.approx(a["mean"], abs=0.02)
    import numpy as np

    np.savez(tmp_path / "new.npz", x=np.array([2.0], dtype=np.float32))
    proc = run_cli("predict", str(run), "--input", str(tmp_path / "new.npz"))
    assert proc.returncode == 0, proc.stderr
    assert np.ravel(json.loads(proc.stdout)["y"]["mean"])[0] == pytest.approx(3.0, abs=0.2)


def test_interactive_model_comes_back_with_model_argument(tmp_path):
    """A model typed at the prompt or in a notebook (module ``__main__``) has no file to reopen."""
    import inspect
    import textwrap

    namespace = {"__name__": "__main__", "pyro": pyro, "dist": dist, "S0": S0, "SIGMA": SIGMA}
    exec(textwrap.dedent(inspect.getsource(regression)), namespace)
    interactive = namespace["regression"]
    x, y = _data()
    post = bayesdl.fit(interactive, data={"x": x, "y": y}, steps=100, progress=False)
    post.save(tmp_path / "run")
    with pytest.raises(ValueError, match="model=fn"):
        bayesdl.load(tmp_path / "run")
    proc = run_cli("evaluate", str(tmp_path / "run"))
    assert proc.returncode == 2 and "model=fn" in proc.stderr
    back = bayesdl.load(tmp_path / "run", model=interactive)
    assert back.summary(num_samples=500)["theta"]["mean"] == pytest.approx(
        post.summary(num_samples=500)["theta"]["mean"], abs=0.05
    )


def test_to_arviz_has_chain_and_draw_dims(fitted):
    az = pytest.importorskip("arviz")
    idata = fitted[0].to_arviz(num_samples=300)
    theta = idata.posterior["theta"]
    assert theta.sizes["chain"] == 1 and theta.sizes["draw"] == 300
    table = az.summary(idata, var_names=["theta"], kind="stats")
    assert len(table) == 2


def test_cli_main_twice_in_one_process_fits_two_user_models(tmp_path):
    """The second user model used to fail: a leftover AutoMultivariateNormal.loc in the store."""
    from bayesdl.cli import main

    (tmp_path / "m.py").write_text(MODEL_FILE)
    import numpy as np

    np.savez(tmp_path / "d.npz", x=np.linspace(-1, 1, 30), y=np.linspace(-1, 1, 30))
    for i, guide in enumerate(("auto-mvn", "auto-mvn", "auto-normal")):
        argv = [
            "fit",
            f"{tmp_path / 'm.py'}:model",
            "--data",
            str(tmp_path / "d.npz"),
            "--guide",
            guide,
            "--steps",
            "50",
            "--quiet",
            "--out",
            str(tmp_path / f"r{i}"),
        ]
        assert main(argv) == 0


def test_one_top_level_name_in_the_wheel(tmp_path):
    import shutil

    root = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(
        bayesdl.__path__[0],
        root,
        ignore=shutil.ignore_patterns(".*", "build", "runs", "tour", "*.egg-info", "__pycache__"),
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    import zipfile

    (wheel,) = tmp_path.glob("bayesdl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"bayesdl"}, top
    assert "bayesdl/cli.py" in names and "bayesdl/models/coin.py" in names
    assert not any(n.startswith("bayesdl/tests/") for n in names)


def test_users_own_models_py_does_not_shadow_bayesdl(tmp_path):
    (tmp_path / "models.py").write_text("raise ImportError('the user models.py was imported')\n")
    (tmp_path / "inference.py").write_text("raise ImportError('user inference.py imported')\n")
    (tmp_path / "plug.py").write_text(
        "from bayesdl.workflows.user_model import UserModel\n"
        "from bayesdl.workflows.registry import register\n"
        "import pyro, pyro.distributions as dist\n\n"
        "def m():\n    pyro.sample('z', dist.Normal(0., 1.))\n\n"
        "@register\nclass P(UserModel):\n    name = 'plugged'\n    model_fn = staticmethod(m)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bayesdl", "list", "--plugin", "plug.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "plugged" in proc.stdout and "coin" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-c", "import bayesdl; print(bayesdl.fit)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_load_reads_a_cli_run(tmp_path):
    run = tmp_path / "coin"
    proc = run_cli(
        "fit",
        "coin",
        "--heads",
        "6",
        "--tails",
        "4",
        "--steps",
        "1500",
        "--quiet",
        "--out",
        str(run),
    )
    assert proc.returncode == 0, proc.stderr
    post = bayesdl.load(run)
    sd = math.sqrt(7 * 5 / (12**2 * 13))
    assert post.summary(num_samples=4000)["pi"]["mean"] == pytest.approx(7 / 12, abs=0.15 * sd)
    assert post.elbo and post.run_dir == run
    assert "pi" in repr(post)


def test_a_run_fitted_into_out_from_python_reopens_with_its_data(tmp_path):
    """``bayesdl.fit(fn, data, out=dir)`` keeps the data in the folder (``data.npz``), as
    ``Posterior.save`` does, so ``bayesdl.load(dir, model=fn)`` finds it."""

    def model(x, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("n", x.shape[0]):
            pyro.sample("y", dist.Normal(w * x, 0.5), obs=y)

    x = torch.linspace(-1, 1, 30)
    post = bayesdl.fit(model, {"x": x, "y": 2 * x}, steps=300, out=tmp_path / "run", seed=0)
    assert (tmp_path / "run" / "data.npz").exists()
    back = bayesdl.load(tmp_path / "run", model=model)
    assert back.params == post.params
    mean = post.summary(2000)["w"]["mean"]
    assert back.summary(2000)["w"]["mean"] == pytest.approx(mean, abs=0.05)
