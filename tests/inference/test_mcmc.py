"""Issue 13: NUTS beside VI -- one flag away, checked against closed forms, saved safely."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import NUTS

import bayesdl
from bayesdl.cli import main
from bayesdl.fits.draws import DrawsPosterior
from bayesdl.fits.nuts import DRAWS
from bayesdl.inference.mcmc import MCMCConfig, run_nuts

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def within_mcse(row: dict, mean: float, sd: float, k: float = 3.0) -> None:
    """Mean and sd of the draws within ``k`` Monte Carlo standard errors of the truth: the
    mean's is ``sd / sqrt(ESS)``, the sd's ``sd / sqrt(2 ESS)`` (near-Gaussian draws)."""
    n = row["n_eff"]
    assert abs(row["mean"] - mean) < k * sd / math.sqrt(n), (row, mean)
    assert abs(row["std"] - sd) < k * sd / math.sqrt(2 * n), (row, sd)


def test_coin_matches_the_beta_posterior():
    post = bayesdl.fit(
        "coin", heads=6, tails=4, prior_a=2.0, prior_b=2.0, method="nuts", num_samples=500,
        warmup=200, chains=2, progress=False,
    )  # fmt: skip
    assert isinstance(post, DrawsPosterior) and post.draws["pi"].shape == (2, 500)
    exact = torch.distributions.Beta(2.0 + 6, 2.0 + 4)
    row = post.summary()["pi"]
    assert row["r_hat"] < 1.05 and post.converged is True
    within_mcse(row, exact.mean.item(), exact.stddev.item())
    assert post._run.summary["exact_posterior"]["pi"]["mean"] == pytest.approx(8 / 14)


def test_linreg_matches_the_closed_form_and_its_run_folder_works(tmp_path, capsys):
    out = tmp_path / "nuts"
    argv = ["fit", "linreg", "--simulate", "60", "--dim", "2", "--noise-scale", "0.5"]
    argv += ["--inference", "nuts", "--samples", "400", "--warmup", "200", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "NUTS, 2 chain(s) x 400 draws" in capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    exact = s["exact_posterior"]["theta"]
    post = bayesdl.load(out)
    row = post.summary()["theta"]
    assert max(row["r_hat"]) < 1.05 and s["converged"] is True
    for k in range(2):
        within_mcse(
            {"mean": row["mean"][k], "std": row["std"][k], "n_eff": row["n_eff"][k]},
            exact["mean"][k],
            exact["std"][k],
        )
    # draws.npz: plain arrays, [chains, samples, *shape], read without pickle
    with np.load(out / DRAWS, allow_pickle=False) as f:
        assert f["theta"].shape == (2, 400, 2) and f["theta"].dtype.kind == "f"
    assert torch.equal(post.draws["theta"], torch.from_numpy(np.load(out / DRAWS)["theta"]))
    assert (out / "nuts_draws.png").exists() and not (out / "checkpoint.pt").exists()
    assert [r["chain"] for r in map(json.loads, (out / "metrics.jsonl").open())] == [1, 2]
    idata = post.to_arviz()
    assert idata.posterior.sizes["chain"] == 2 and idata.posterior.sizes["draw"] == 400
    assert post.sample(100)["theta"].shape == (100, 2)
    assert post.predict({"x": torch.ones(3, 2)}, 50)["y"].shape == (50, 3)
    # evaluate and predict read the draws
    assert main(["evaluate", str(out)]) == 0
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["exact_posterior"]["theta"]["mean"] == exact["mean"]
    np.savez(tmp_path / "new.npz", x=np.ones((3, 2)))
    argv = ["predict", str(out), "--input", str(tmp_path / "new.npz")]
    assert main([*argv, "--output", str(tmp_path / "pred.json")]) == 0
    pred = json.loads((tmp_path / "pred.json").read_text())
    assert len(pred["y"]["mean"]) == 3
    # saved again from Python, and reloaded
    copy = post.save(tmp_path / "copy")
    assert torch.equal(bayesdl.load(copy).draws["theta"], post.draws["theta"])


def test_a_user_model_with_an_enumerated_discrete_site_samples(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 1, 10), rng.normal(3, 1, 20)])
    np.savetxt(tmp_path / "mix.csv", x[:, None], header="x", comments="")
    out = tmp_path / "mix"
    argv = ["fit", f"{EXAMPLES / 'gaussian_mixture.py'}:model", "--data", str(tmp_path / "mix.csv")]
    argv += ["--arg", "K=2", "--inference", "nuts", "--samples", "40", "--warmup", "40"]
    assert main([*argv, "--chains", "1", "--quiet", "--out", str(out)]) == 0
    post = bayesdl.load(out)
    assert set(post.draws) == {"weights", "locs", "scale"}  # z is summed out
    assert post.draws["locs"].shape == (1, 40, 2)
    locs = post.draws["locs"].sort(-1).values.mean((0, 1))
    assert locs[0] < -1 and locs[1] > 1
    pred = post.predict({"x": torch.zeros(5)}, 20)
    assert pred["z"].shape == (20, 5) and pred["x"].shape == (20, 5)


def isotropic(d: int):
    def model():
        pyro.sample("z", dist.Normal(torch.zeros(d), 1.0).to_event(1))

    return model


def test_a_big_model_is_sampled_but_warned_about():
    with pytest.warns(UserWarning, match="NUTS on 1001 latent dimensions"):
        result = run_nuts(isotropic(1001), {}, MCMCConfig("nuts", 2, 2, 1), progress=False)
    assert result.draws["z"].shape == (1, 2, 1001)


def test_ctrl_c_keeps_the_draws_so_far(monkeypatch):
    original, calls = NUTS.sample, []

    def sample(self, params, stop_at):
        calls.append(1)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return original(self, params)

    config = MCMCConfig("nuts", num_samples=30, warmup=20, chains=2)
    # in the second chain: the first is kept, whole
    monkeypatch.setattr(NUTS, "sample", lambda self, p: sample(self, p, 50 + 25))
    result = run_nuts(isotropic(2), {}, config, progress=False)
    assert result.interrupted and result.draws["z"].shape == (1, 30, 2)
    # in the first chain, after 10 draws: those are kept
    calls.clear()
    monkeypatch.setattr(NUTS, "sample", lambda self, p: sample(self, p, 20 + 11))
    result = run_nuts(isotropic(2), {}, config, progress=False)
    assert result.interrupted and result.draws["z"].shape == (1, 10, 2)
    # during the first chain's warm-up: nothing to keep
    calls.clear()
    monkeypatch.setattr(NUTS, "sample", lambda self, p: sample(self, p, 5))
    with pytest.raises(KeyboardInterrupt):
        run_nuts(isotropic(2), {}, config, progress=False)


def test_bad_settings_are_one_line_errors(tmp_path, capsys):
    def error(*argv) -> str:
        assert main([str(a) for a in argv]) == 2
        return capsys.readouterr().err

    out = tmp_path / "r"
    assert "--samples must be" in error(
        "fit", "coin", "--heads", "1", "--inference", "nuts", "--samples", "0", "--out", out
    )
    assert "cannot be resumed" in error(
        "fit", "coin", "--inference", "nuts", "--resume", "--out", out
    )
    assert "--inference" in error("fit", "vae", "--inference", "nuts", "--out", out)
    with pytest.raises(bayesdl.UserError, match="must be one of vi, nuts"):
        bayesdl.fit("coin", method="hmc")
