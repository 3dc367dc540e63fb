"""Issue 13: ``bayesdl compare A B`` says how far a fit is from a reference, per latent site."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

import bayesdl
from bayesdl.cli import main
from bayesdl.reports.compare import compare_draws

LINREG = ["linreg", "--simulate", "60", "--dim", "2", "--noise-scale", "0.5", "--quiet"]


def test_flags_a_shifted_mean_or_a_wrong_spread_elementwise():
    g = torch.Generator().manual_seed(0)
    b = {"mu": torch.randn(20000, generator=g), "w": torch.randn(20000, 2, 2, generator=g)}
    same = {k: torch.randn(v.shape, generator=g) for k, v in b.items()}
    c = compare_draws(same, b)
    assert list(c.rows) == ["mu", "w[0,0]", "w[0,1]", "w[1,0]", "w[1,1]"] and c.flagged == []
    shifted = {"mu": b["mu"] + 0.5, "w": b["w"] * torch.tensor([[1.0, 0.5], [1.0, 1.5]])}
    c = compare_draws(shifted, b)
    assert c.rows["mu"]["mean_diff_sd"] == pytest.approx(0.5, abs=0.02)
    assert c.rows["w[0,1]"]["sd_ratio"] == pytest.approx(0.5, abs=0.02)
    assert c.flagged == ["mu", "w[0,1]", "w[1,1]"]
    assert c.to_json()["mu"] == {
        "mean_diff_sd": c.rows["mu"]["mean_diff_sd"],
        "sd_ratio": c.rows["mu"]["sd_ratio"],
        "flagged": True,
    }
    assert "3 of 5 flagged" in c.table()
    # sites one side lacks are listed, not compared
    c = compare_draws({"mu": b["mu"], "extra": b["mu"]}, b)
    assert c.only_a == ["extra"] and c.only_b == ["w"] and "not compared" in c.table()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Simulated linear regression: NUTS, a converged full-covariance VI fit, one of 20 steps."""
    d = tmp_path_factory.mktemp("compare")
    for name, extra in (
        ("nuts", ["--inference", "nuts", "--samples", "400", "--warmup", "200"]),
        ("vi", ["--guide", "full-covariance", "--steps", "auto", "--particles", "8"]),
        ("short", ["--guide", "full-covariance", "--steps", "20"]),
    ):
        assert main(["fit", *LINREG, *extra, "--out", str(d / name)]) == 0
    return d


def test_a_converged_full_rank_fit_matches_nuts_one_of_20_steps_does_not(runs, capsys):
    out = runs / "figures"
    argv = ["compare", str(runs / "vi"), str(runs / "nuts"), "--json", str(runs / "vi.json")]
    assert main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "0 of 2 flagged" in text and (out / "compare.png").exists()
    assert json.loads((runs / "vi" / "summary.json").read_text())["converged"] is True
    result = json.loads((runs / "vi.json").read_text())
    assert set(result) == {"theta[0]", "theta[1]"}
    for row in result.values():
        assert set(row) == {"mean_diff_sd", "sd_ratio", "flagged"} and row["flagged"] is False
        assert abs(row["mean_diff_sd"]) < 0.3 and 0.7 <= row["sd_ratio"] <= 1.3

    argv = ["compare", str(runs / "short"), str(runs / "nuts"), "--json", str(runs / "s.json")]
    assert main([*argv, "--out", str(out)]) == 2  # compare.png exists: never replaced silently
    assert main([*argv, "--out", str(out), "--overwrite"]) == 0  # exit 0 whatever it finds
    assert "2 of 2 flagged" in capsys.readouterr().out
    assert all(r["flagged"] for r in json.loads((runs / "s.json").read_text()).values())


def test_python_compare_takes_posteriors_and_folders(runs, tmp_path):
    nuts = bayesdl.load(runs / "nuts")
    c = bayesdl.compare(bayesdl.load(runs / "vi"), runs / "nuts", figure=tmp_path / "c.png")
    assert c.flagged == [] and (tmp_path / "c.png").exists()
    same = bayesdl.compare(nuts, nuts)
    assert all(r["mean_diff_sd"] == 0 and r["sd_ratio"] == 1 for r in same.rows.values())
    with pytest.raises(bayesdl.UserError, match="Posterior or a run folder"):
        bayesdl.compare(np.zeros(3), nuts)


@pytest.mark.slow
def test_the_tour_shows_vi_beside_nuts(tmp_path):
    from bayesdl.reports import tour_nuts

    linreg, schools = tour_nuts.sections(tmp_path, quick=True)
    assert "mean-field optimum sd" in linreg and "E[tau | y]" in schools
    for name in ("linreg-nuts", "schools-nuts"):
        assert (tmp_path / "nuts" / name / "compare.png").exists()
    with pytest.raises(bayesdl.UserError, match="already holds a run"):
        tour_nuts.refuse_existing(tmp_path)


@pytest.mark.slow
def test_the_readme_section_runs(tmp_path, monkeypatch, capsys):
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    block = readme.split("## NUTS, convergence and compare", 1)[1]
    code = re.search(r"```bash\n(.*?)```", block, re.S).group(1)
    (tmp_path / "examples").symlink_to(root / "examples")
    monkeypatch.chdir(tmp_path)
    outputs = []
    for line in code.splitlines():
        argv = shlex.split(line.split("#")[0])
        if "nuts" in argv:
            argv += ["--samples", "300", "--warmup", "200"]
        if argv[1] == "fit":
            argv.append("--quiet")
        assert argv[0] == "bayesdl" and main(argv[1:]) == 0, line
        outputs.append(capsys.readouterr().out)
    assert "0 of 5 flagged" in outputs[2] and (tmp_path / "runs" / "compare.json").exists()
    assert "4 of 5 flagged" in outputs[4] or "5 of 5 flagged" in outputs[4]
    assert (tmp_path / "runs" / "compare.png").exists()
