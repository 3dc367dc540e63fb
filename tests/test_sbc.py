"""Simulation-based calibration through the public API (``bayesdl.sbc``, ``bayesdl sbc``).

Truth by construction: a guide equal to the closed-form posterior of the Gamma-Poisson model
(``rate | y ~ Gamma(a + sum y, b + n)``) must give uniform ranks, the same guide shrunk or
widened must fail with the shape that says so, and mean-field VI on a posterior whose two
coordinates correlate at -0.997 (its best factorized Gaussian is 0.07 times as wide) must fail
as too narrow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesdl
from bayesdl.cli import main

A, B = 3.0, 1.0
Y = torch.tensor([1.0, 3.0, 2.0, 4.0, 0.0, 2.0, 3.0, 1.0])
#: closed-form guides fit in one step at a learning rate that leaves them where they start
EXACT = {"steps": 1, "lr": 1e-6, "progress": False}

pytestmark = pytest.mark.filterwarnings("ignore:.*has not converged")


def gamma_poisson(y):
    """``rate ~ Gamma(3, 1)``, ``y_i ~ Poisson(rate)``."""
    rate = pyro.sample("rate", dist.Gamma(A, B))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Poisson(rate), obs=y)


def closed_form_guide(k: float = 1.0):
    """``q(rate) = Gamma(k (a + sum y), k (b + n))``: the exact posterior for ``k = 1``; the
    same mean with the sd divided by ``sqrt(k)`` otherwise."""

    def guide(y):
        log_k = pyro.param("log_k", torch.tensor(math.log(k)))
        kk = log_k.exp()
        pyro.sample("rate", dist.Gamma(kk * (A + y.sum()), kk * (B + len(y))))

    return guide


def test_the_exact_posterior_gives_uniform_ranks():
    result = bayesdl.sbc(
        gamma_poisson, {"y": Y}, replications=30, num_draws=19, guide=closed_form_guide(), **EXACT
    )
    ranks = result.ranks["rate"]
    assert ranks.shape == (30, 1) and ranks.min() >= 0 and ranks.max() <= 19
    assert len(np.unique(ranks)) >= 10  # spread over 0..19, not a constant
    assert result.verdict == "calibrated" and result.calibrated, result
    assert all(t.p_adjusted > 0.01 for t in result.tests)


@pytest.mark.parametrize(
    "k, words",
    [
        (9.0, "U-shaped: the posterior is too narrow"),
        (1 / 9, "hump-shaped: the posterior is too wide"),
    ],
)
def test_a_posterior_of_the_wrong_width_fails_with_its_shape(k, words):
    """The exact guide with sd / 3 is too narrow (U), with sd x 3 too wide (hump)."""
    result = bayesdl.sbc(
        gamma_poisson, {"y": Y}, replications=30, num_draws=19, guide=closed_form_guide(k), **EXACT
    )
    assert result.verdict == "miscalibrated" and not result.calibrated
    assert words in result.diagnosis[0] and result.diagnosis[0].startswith("rate:")


def sum_of_two(y):
    """``w ~ N(0, I_2)``, ``y ~ N(w_0 + w_1, 0.05^2)``: only the sum is measured, so the
    posterior correlation is -0.997 and the best factorized Gaussian has sds
    ``1 / sqrt(1 + 1 / 0.05^2) = 0.05`` against the exact ``sqrt(0.5) = 0.71``."""
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    pyro.sample("y", dist.Normal(w.sum(-1), 0.05), obs=y)


def test_mean_field_on_a_correlated_posterior_is_too_narrow():
    """Real VI fits (auto-normal): the ranks of both coefficients are U-shaped, the verdict
    says too narrow and names the remedies."""
    result = bayesdl.sbc(
        sum_of_two, {"y": torch.tensor(0.3)}, guide="auto-normal", replications=20,
        num_draws=19, steps=100, lr=0.05, progress=False,
    )  # fmt: skip
    assert result.verdict == "miscalibrated", result
    assert [t.label for t in result.tests] == ["w[0]", "w[1]"]
    assert all(t.fails and "too narrow" in t.shape and t.z_var > 0 for t in result.tests)
    assert any(
        line.startswith("remedies: ") and "a richer guide" in line for line in result.diagnosis
    )


def test_nuts_draws_are_thinned_to_L_and_their_ess_is_recorded():
    result = bayesdl.sbc(
        gamma_poisson, {"y": Y}, method="nuts", replications=3, num_draws=19,
        num_samples=40, warmup=40, chains=1, progress=False,
    )  # fmt: skip
    assert result.verdict == "inconclusive"  # 3 replications: ranks, no test
    for rep in result.replications:
        assert 0 <= rep["ranks"]["rate"][0] <= 19 and rep["ess_min"] > 0
    with pytest.raises(bayesdl.UserError, match="fewer than --draws 19"):
        bayesdl.sbc(gamma_poisson, {"y": Y}, method="nuts", num_draws=19, num_samples=9, chains=2)


def test_same_seed_same_ranks_and_no_fit_touches_the_global_store():
    before = dict(pyro.get_param_store().items())
    runs = [
        bayesdl.sbc(gamma_poisson, {"y": Y}, replications=6, num_draws=19, seed=s,
                    guide=closed_form_guide(), **EXACT).ranks["rate"]
        for s in (7, 7, 8)
    ]  # fmt: skip
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    assert dict(pyro.get_param_store().items()).keys() == before.keys()


def test_ctrl_c_keeps_the_finished_replications_and_resume_completes(tmp_path):
    """A Ctrl-C inside the third replication's fit: the two finished ones are kept in
    ``sbc.json``; ``resume=True`` runs the rest, and the ranks are those of a run never
    interrupted (every replication is seeded by its index)."""
    calls = {"n": 0, "stop_at": None}
    exact = closed_form_guide()

    def guide(y):
        calls["n"] += 1
        if calls["n"] == calls["stop_at"]:
            raise KeyboardInterrupt
        exact(y)

    full = bayesdl.sbc(gamma_poisson, {"y": Y}, replications=4, num_draws=19, guide=guide, **EXACT)
    calls.update(n=0, stop_at=None)
    bayesdl.sbc(gamma_poisson, {"y": Y}, replications=1, num_draws=19, guide=guide, **EXACT)
    per_fit = calls["n"]
    calls.update(n=0, stop_at=2 * per_fit + 2)
    out = tmp_path / "sbc"
    cut = bayesdl.sbc(
        gamma_poisson, {"y": Y}, replications=4, num_draws=19, guide=guide, out=out, **EXACT
    )
    saved = json.loads((out / "sbc.json").read_text())
    assert cut.interrupted and saved["interrupted"] and len(saved["replications"]) == 2
    calls.update(n=0, stop_at=None)
    with pytest.raises(bayesdl.UserError, match="already holds an SBC"):
        bayesdl.sbc(gamma_poisson, {"y": Y}, replications=4, num_draws=19, guide=guide, out=out)
    with pytest.raises(bayesdl.UserError, match=r"other settings .*num_draws"):
        bayesdl.sbc(gamma_poisson, {"y": Y}, replications=4, num_draws=9, guide=guide,
                    out=out, resume=True, **EXACT)  # fmt: skip
    done = bayesdl.sbc(
        gamma_poisson, {"y": Y}, replications=4, num_draws=19, guide=guide, out=out,
        resume=True, **EXACT,
    )  # fmt: skip
    assert not done.interrupted and len(done.replications) == 4
    np.testing.assert_array_equal(done.ranks["rate"], full.ranks["rate"])
    assert (out / "sbc_ranks.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "model_src, message",
    [
        ("def model(y):\n    pyro.factor('f', -(y ** 2).sum())\n"
         "    r = pyro.sample('r', dist.Normal(0., 1.))\n"
         "    pyro.sample('y', dist.Normal(r, 1.).expand([len(y)]).to_event(1), obs=y)\n",
         "pyro.factor"),
        ("def model(y):\n    r = pyro.sample('r', dist.Normal(0., 1.))\n"
         "    with pyro.plate('data', len(y), subsample_size=2) as i:\n"
         "        pyro.sample('y', dist.Normal(r, 1.), obs=y[i])\n", "subsamples 2 of 8"),
        ("def model(y):\n    r = pyro.sample('r', dist.Normal(0., 1.))\n"
         "    with pyro.plate('data', len(y)):\n"
         "        pyro.sample('y', dist.Normal(r, 1.), obs=y * 2)\n",
         "observes none of the data's arguments"),
    ],
)  # fmt: skip
def test_models_whose_data_cannot_be_simulated_are_refused(tmp_path, model_src, message):
    path = tmp_path / "m.py"
    path.write_text("import pyro\nimport pyro.distributions as dist\n\n" + model_src)
    with pytest.raises(bayesdl.UserError, match=message):
        bayesdl.sbc(f"{path}:model", data=_npz(tmp_path), replications=2, progress=False)


def test_python_errors_are_user_errors():
    from pyro.infer.autoguide import AutoNormal

    with pytest.raises(bayesdl.UserError, match="afresh for every replication"):
        bayesdl.sbc(gamma_poisson, {"y": Y}, guide=AutoNormal(gamma_poisson))
    with pytest.raises(bayesdl.UserError, match="unknown option 'bogus'"):
        bayesdl.sbc(gamma_poisson, {"y": Y}, bogus=1)
    with pytest.raises(bayesdl.UserError, match="--replications must be an integer >= 1"):
        bayesdl.sbc(gamma_poisson, {"y": Y}, replications=0)
    with pytest.raises(bayesdl.UserError, match="built-in workflow"):
        bayesdl.sbc("coin")


def _npz(tmp_path: Path) -> Path:
    path = tmp_path / "counts.npz"
    np.savez(path, y=Y.numpy())
    return path


GUIDE_FILE = """import math
import pyro
import pyro.distributions as dist
import torch


def model(y):
    rate = pyro.sample("rate", dist.Gamma(3.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Poisson(rate), obs=y)


def guide(y):
    k = pyro.param("log_k", torch.tensor(0.0)).exp()
    pyro.sample("rate", dist.Gamma(k * (3.0 + y.sum()), k * (1.0 + len(y))))


def nothing_latent(y):
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Poisson(2.0), obs=y)
"""


def test_cli_writes_sbc_json_and_the_figure(tmp_path, cli, capsys):
    (tmp_path / "gp.py").write_text(GUIDE_FILE)
    out = tmp_path / "sbc"
    argv = [
        "sbc", f"{tmp_path / 'gp.py'}:model", "--data", str(_npz(tmp_path)),
        "--guide", f"{tmp_path / 'gp.py'}:guide", "--steps", "1", "--lr", "1e-6",
        "--replications", "12", "--draws", "19", "--quiet", "--out", str(out),
    ]  # fmt: skip
    proc = cli(*argv)
    assert proc.returncode == 0, proc.stderr
    assert "verdict: calibrated" in proc.stdout
    saved = json.loads((out / "sbc.json").read_text())
    assert saved["verdict"] == "calibrated" and saved["replications_ranked"] == 12
    assert saved["settings"]["options"]["steps"] == 1 and saved["settings"]["num_draws"] == 19
    assert [r["seed"] for r in saved["replications"]] == list(range(12))
    assert all(r["fit_seconds"] > 0 for r in saved["replications"])
    assert (out / "sbc_ranks.png").read_bytes().startswith(b"\x89PNG")
    assert main(argv) == 2  # never replaced without --overwrite
    assert "already holds an SBC" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["FILE:nothing_latent"], "has no continuous latent site"),
        (["FILE:model", "--replications", "0"], "--replications must be an integer >= 1"),
        (["FILE:model", "--bogus"], "unrecognized arguments: --bogus"),
        (["FILE:model", "--draws", "x"], "invalid int value"),
        (["coin"], "built-in workflow"),
        ([], "sbc needs a MODEL"),
    ],
)
def test_cli_bad_input_is_one_line_and_status_2(tmp_path, capsys, extra, message):
    (tmp_path / "gp.py").write_text(GUIDE_FILE)
    argv = [a.replace("FILE", str(tmp_path / "gp.py")) for a in extra]
    if argv:
        argv += ["--data", str(_npz(tmp_path)), "--out", str(tmp_path / "o"), "--quiet"]
    assert main(["sbc", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o" / "sbc.json").exists()


def test_cli_takes_a_registered_user_model(tmp_path, capsys):
    """``bayesdl sbc NAME --plugin FILE``: the plugin's model, its default data file and its
    default guide (a FILE.py:guide) are those the replications fit."""
    (tmp_path / "gp.py").write_text(
        GUIDE_FILE
        + "\n\nfrom bayesdl.workflows.registry import register\n"
        + "from bayesdl.workflows.user_model import UserModel\n\n\n"
        + "@register\nclass CountsModel(UserModel):\n    name = 'sbc-counts'\n"
        + "    model_fn = staticmethod(model)\n    default_data = 'counts.npz'\n"
        + f"    default_guide = '{tmp_path / 'gp.py'}:guide'\n"
    )
    _npz(tmp_path)
    out = tmp_path / "o"
    argv = ["sbc", "sbc-counts", "--plugin", str(tmp_path / "gp.py"), "--steps", "1",
            "--lr", "1e-6", "--replications", "12", "--draws", "19", "--quiet"]  # fmt: skip
    argv += ["--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    saved = json.loads((out / "sbc.json").read_text())
    assert saved["settings"]["model"] == "sbc-counts" and saved["verdict"] == "calibrated"
    assert saved["settings"]["guide"].endswith("gp.py:guide")
