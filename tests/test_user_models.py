"""Issue 6: a user's Pyro function fitted from the command line (files, plugins, errors)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from bayesdl.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

GAMMA_POISSON = '''
import pyro
import pyro.distributions as dist


def model(counts, a=5.0, b=0.5):
    """rate ~ Gamma(a, b), counts_n ~ Poisson(rate)."""
    rate = pyro.sample("rate", dist.Gamma(a, b))
    with pyro.plate("data", len(counts){subsample}) as idx:
        pyro.sample("obs", dist.Poisson(rate), obs=counts[idx])
'''


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Tiny models on a shared 2-core machine: one torch thread (here and in subprocesses)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def bayesdl(capsys, *argv: str) -> str:
    """Run the ``bayesdl`` entry point in this process (no interpreter start-up); its stdout."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def gamma_poisson(tmp_path: Path, subsample: str = "") -> tuple[Path, Path, float]:
    """Model file, data file (20 counts) and the exact posterior mean (a + sum y) / (b + N)."""
    f = tmp_path / "gp.py"
    f.write_text(GAMMA_POISSON.format(subsample=subsample))
    counts = np.random.default_rng(0).poisson(3.0, 20)
    np.savez(tmp_path / "counts.npz", counts=counts)
    exact = (5.0 + counts.sum()) / (0.5 + len(counts))
    # the prior moves the answer by more than the tolerance: a test that ignored it would fail
    assert abs(exact / counts.mean() - 1) > 0.04
    return f, tmp_path / "counts.npz", exact


def test_gamma_poisson_auto_normal_exact_mean(capsys, tmp_path):
    # The best LogNormal q for a Gamma(alpha, beta) posterior has E_q = alpha / beta exactly
    # (d/dm of alpha m - beta exp(m + s^2/2) + log s), so only optimisation noise and the
    # Monte Carlo error of the summary (sd/mean/sqrt(1000) ~ 0.4 %) separate the two: 2 %.
    f, data, exact = gamma_poisson(tmp_path)
    out = tmp_path / "run"
    bayesdl(
        capsys,
        "fit",
        f"{f}:model",
        "--guide",
        "auto-normal",
        "--data",
        data,
        "--steps",
        "800",
        "--lr",
        "0.05",
        "--out",
        out,
        "--quiet",
    )
    post = summary(out)["posterior"]["rate"]
    assert post["mean"] == pytest.approx(exact, rel=0.02)
    assert set(summary(out)["posterior"]) == {"rate"}  # no autoguide-internal sites


@pytest.mark.parametrize("how", ["engine", "model"])
def test_gamma_poisson_minibatches(capsys, tmp_path, how):
    # Minibatches of 5 out of 20: the plate scales the likelihood by N / B, so the optimum is
    # unchanged; the extra gradient noise is damped by the cosine LR decay (measured < 1 %): 3 %.
    f, data, exact = gamma_poisson(tmp_path, ", subsample_size=5" if how == "model" else "")
    out = tmp_path / "run"
    extra = ["--batch-size", "5"] if how == "engine" else []
    bayesdl(
        capsys,
        "fit",
        f"{f}:model",
        "--data",
        data,
        "--out",
        out,
        "--quiet",
        "--steps",
        "800",
        "--lr",
        "0.05",
        "--particles",
        "4",
        *extra,
    )
    s = summary(out)
    assert s["user_model"]["data_size"] == 20
    assert s["posterior"]["rate"]["mean"] == pytest.approx(exact, rel=0.03)


def test_gaussian_mixture_enum_recovers_means(capsys, tmp_path):
    # Well separated clusters (-3 and 4, sd 1): the posterior mean of each component's location
    # is its cluster's sample mean up to the N(0, 10^2) prior (< 1e-3); posterior sd ~ 0.13
    # (60 and 140 points): 0.15.
    x = np.loadtxt(EXAMPLES / "data" / "mixture.csv", skiprows=1)
    cluster_means = sorted([x[x < 0.5].mean(), x[x >= 0.5].mean()])
    out = tmp_path / "run"
    bayesdl(
        capsys,
        "fit",
        EXAMPLES / "gaussian_mixture.py:model",
        "--data",
        EXAMPLES / "data" / "mixture.csv",
        "--estimator",
        "enum",
        "--arg",
        "K=2",
        "--init-value",
        "locs=[-1,1]",
        "--steps",
        "600",
        "--lr",
        "0.05",
        "--out",
        out,
        "--quiet",
    )
    s = summary(out)
    assert s["user_model"]["enumerated_sites"] == ["z"]
    locs = sorted(s["posterior"]["locs"]["mean"])
    assert locs == pytest.approx(cluster_means, abs=0.15)
    assert sorted(s["posterior"]["weights"]["mean"]) == pytest.approx([0.3, 0.7], abs=0.05)


def poisson_mle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Newton's method for the Poisson GLM with intercept: returns (w..., b)."""
    X = np.column_stack([x, np.ones(len(x))])
    beta = np.zeros(X.shape[1])
    for _ in range(50):
        mu = np.exp(X @ beta)
        beta += np.linalg.solve(X.T @ (X * mu[:, None]), X.T @ (y - mu))
    return beta


def test_poisson_regression_minibatches_and_predict(capsys, tmp_path):
    # 200 points: the posterior is close to N(MLE, I^-1) (prior N(0, 1) shifts it by ~ sd^2 w
    # ~ 3e-3); posterior sd ~ 0.05, minibatch noise is damped by the LR decay: 0.05.
    table = np.loadtxt(EXAMPLES / "data" / "poisson_regression.csv", delimiter=",", skiprows=1)
    mle = poisson_mle(table[:, :2], table[:, 2])
    out = tmp_path / "run"
    bayesdl(
        capsys,
        "fit",
        EXAMPLES / "poisson_regression.py:model",
        "--data",
        EXAMPLES / "data" / "poisson_regression.csv",
        "--x-cols",
        "x1,x2",
        "--y-col",
        "y",
        "--guide",
        "auto-mvn",
        "--batch-size",
        "50",
        "--steps",
        "1000",
        "--out",
        out,
        "--quiet",
    )
    post = summary(out)["posterior"]
    assert post["w"]["mean"] == pytest.approx(mle[:2], abs=0.05)
    assert post["b"]["mean"] == pytest.approx(mle[2], abs=0.05)
    # predictive mean at new inputs = E[exp(b + x w)]: within 10 % of exp(b_mle + x w_mle)
    # (parameter uncertainty adds ~ var/2 ~ 0.5 %, 1000 Poisson draws ~ 3 % standard error)
    new = tmp_path / "new.csv"
    new.write_text("x1,x2\n0,0\n1,0\n0,1\n")
    pred = json.loads(bayesdl(capsys, "predict", out, "--input", new))["y"]["mean"]
    expected = np.exp(mle[2] + np.array([[0, 0], [1, 0], [0, 1]]) @ mle[:2])
    assert pred == pytest.approx(expected, rel=0.10)
    # the same inputs as an .npz array x: --x-cols/--y-col picked the training table's
    # columns, an .npz names its arrays
    np.savez(tmp_path / "new.npz", x=np.array([[0, 0], [1, 0], [0, 1]], dtype=np.float32))
    pred = json.loads(bayesdl(capsys, "predict", out, "--input", tmp_path / "new.npz"))
    assert pred["y"]["mean"] == pytest.approx(expected, rel=0.10)


def test_eight_schools_plugin(cli, capsys, tmp_path):
    # `list --plugin`, `fit NAME --plugin`, and `evaluate DIR` (which re-imports the plugin)
    # against the exact E[mu | y] by quadrature (4.40, BDA table 5.3's model). A Gaussian in
    # (mu, log tau, eta) is not exact: its mu is within 0.3 posterior sd (3.3) of the truth.
    listing = bayesdl(capsys, "list", "--plugin", EXAMPLES / "eight_schools.py")
    assert re.search(r"^eight-schools\s+continuous", listing, re.M)
    out = tmp_path / "run"
    bayesdl(
        capsys,
        "fit",
        "eight-schools",
        "--plugin",
        EXAMPLES / "eight_schools.py",
        "--steps",
        "1000",
        "--particles",
        "4",
        "--out",
        out,
        "--quiet",
    )
    # a fresh process: the plugin is imported only because the user names it again
    res = cli("evaluate", str(out), "--plugin", str(EXAMPLES / "eight_schools.py"), check=True)
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["exact"]["mu"] == pytest.approx(4.40, abs=0.02)
    assert ev["fitted"]["mu"] == pytest.approx(ev["exact"]["mu"], abs=1.0)
    assert 0 < ev["fitted"]["tau"] < 2 * ev["exact"]["tau"]
    assert "exact.mu" in res.stdout


def test_readme_snippet_runs(cli, tmp_path):
    # The README's model and command, run as written (only the file and --out moved to tmp).
    # x is centred, so a and b are a posteriori independent given sigma and a mean-field
    # Gaussian gets their means; the slope's posterior sd is 0.5 / sqrt(sum (x - xbar)^2)
    # ~ 0.06: least squares within 0.03.
    text = (ROOT / "README.md").read_text()
    section = text.split("<!-- section: user-models")[1].split("<!-- /section: user-models")[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    command = re.search(r"```bash\n(bayesdl fit .*?)\n```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    (tmp_path / "my_model.py").write_text(code)
    argv = shlex.split(command)[1:]
    argv = [str(tmp_path / a) if a.startswith("my_model.py") else a for a in argv]
    out = tmp_path / "line"
    argv[argv.index("--out") + 1] = str(out)
    cli(*argv, "--quiet", check=True)
    table = np.loadtxt(EXAMPLES / "data" / "line.csv", delimiter=",", skiprows=1)
    slope, intercept = np.polyfit(table[:, 0], table[:, 1], 1)
    post = summary(out)["posterior"]
    assert post["b"]["mean"] == pytest.approx(slope, abs=0.03)
    assert post["a"]["mean"] == pytest.approx(intercept, abs=0.03)


# ----------------------------------------------------------------------------- errors

NO_LATENT = """
import pyro
import pyro.distributions as dist


def model(counts):
    with pyro.plate("data", len(counts)):
        pyro.sample("obs", dist.Poisson(3.0), obs=counts)
"""

SHAPES = """
import pyro
import pyro.distributions as dist


def model(a, b):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(a)):
        pyro.sample("y_obs", dist.Normal(w * a, 1.0), obs=b)
"""


def fit_error(capsys, *argv: str) -> str:
    """Run `bayesdl fit ...` in-process; it must exit 2 with one line on stderr."""
    capsys.readouterr()
    assert main(["fit", *argv, "--out", "never-written", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bayesdl: error:") and "\n" not in err
    return err


def test_errors_name_the_mistake(tmp_path, capsys):
    f, data, _ = gamma_poisson(tmp_path)
    missing = tmp_path / "nothere.py"
    assert str(missing) in fit_error(capsys, f"{missing}:model", "--data", str(data))

    broken = tmp_path / "broken.py"
    broken.write_text("import pyro\n\nrate = undefined_name\n")
    err = fit_error(capsys, f"{broken}:model", "--data", str(data))
    assert str(broken) in err and "undefined_name" in err and "line 3" in err

    err = fit_error(capsys, f"{f}:modle", "--data", str(data))
    assert "'modle'" in err and str(f) in err and "model" in err

    nolat = tmp_path / "nolatent.py"
    nolat.write_text(NO_LATENT)
    err = fit_error(capsys, f"{nolat}:model", "--data", str(data))
    assert "no latent site" in err and str(nolat) in err

    np.savez(tmp_path / "extra.npz", counts=np.ones(5), weights=np.ones(5))
    err = fit_error(capsys, f"{f}:model", "--data", str(tmp_path / "extra.npz"))
    assert "'weights'" in err and str(f) in err

    shapes = tmp_path / "shapes.py"
    shapes.write_text(SHAPES)
    np.savez(tmp_path / "ab.npz", a=np.ones(5), b=np.ones(4))
    err = fit_error(capsys, f"{shapes}:model", "--data", str(tmp_path / "ab.npz"))
    assert "'y_obs'" in err and str(shapes) in err and "[4]" in err
    np.savez(tmp_path / "xy.npz", x=np.ones(5), y=np.ones(4))  # x and y: refused as read
    err = fit_error(capsys, f"{shapes}:model", "--data", str(tmp_path / "xy.npz"))
    assert "x" in err and "(5,)" in err and "(4,)" in err

    err = fit_error(capsys, str(f), "--data", str(data))
    assert f"{f}:FUNCTION" in err
    assert not Path("never-written").exists()


def test_discrete_site_needs_enum(capsys):
    err = fit_error(
        capsys, "examples/gaussian_mixture.py:model", "--data", "examples/data/mixture.csv"
    )
    assert "'z'" not in err and "z" in err and "--estimator enum" in err


LOCAL = """
import pyro
import pyro.distributions as dist


def model(x, y=None):
    b = pyro.sample("b", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(x)) as idx:
        u = pyro.sample("u", dist.Normal(0.0, 0.1))  # a local latent: one per row
        pyro.sample("y", dist.Normal(b * x[idx] + u, 0.5), obs=None if y is None else y[idx])
"""


def test_predict_does_not_reread_the_training_data(tmp_path, cli):
    """A model with global latents only predicts from the run folder's few saved rows; one
    with local latents (sized by the data) still needs, and reads, the data file."""
    rows = "\n".join(f"{x / 10},{1.5 * x / 10}" for x in range(-20, 21))
    (tmp_path / "train.csv").write_text("x,y\n" + rows + "\n")
    np.savez(tmp_path / "new.npz", x=np.array([2.0], dtype=np.float32))
    (tmp_path / "glob.py").write_text(LOCAL.replace("u = pyro.sample", "u = 0.0  #"))
    (tmp_path / "local.py").write_text(LOCAL)
    for name in ("glob", "local"):
        cli(
            "fit",
            f"{tmp_path / name}.py:model",
            "--data",
            str(tmp_path / "train.csv"),
            "--steps",
            "300",
            "--quiet",
            "--out",
            str(tmp_path / name),
            check=True,
        )
        assert (tmp_path / name / "prototype.npz").exists()
    before = cli(
        "predict", str(tmp_path / "glob"), "--input", str(tmp_path / "new.npz"), check=True
    ).stdout
    (tmp_path / "train.csv").rename(tmp_path / "moved.csv")
    after = cli("predict", str(tmp_path / "glob"), "--input", str(tmp_path / "new.npz"))
    assert after.returncode == 0, after.stderr
    assert after.stdout == before
    assert np.ravel(json.loads(after.stdout)["y"]["mean"])[0] == pytest.approx(3.0, abs=0.3)
    local = cli("predict", str(tmp_path / "local"), "--input", str(tmp_path / "new.npz"))
    assert local.returncode == 2 and "train.csv" in local.stderr  # it does need the data
