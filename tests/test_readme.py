"""The README's commands are run here, so they cannot drift from the code."""

from __future__ import annotations

import json
import re
import shlex

import numpy as np
import pytest
from conftest import ROOT

import bayesdl.cli as cli

README = (ROOT / "README.md").read_text()


def _block_after(marker: str) -> str:
    m = re.search(re.escape(marker) + r".*?```bash\n(.*?)```", README, re.S)
    assert m, marker
    return m.group(1)


def test_two_commands_install_cpu_torch_first_and_run_the_right_things():
    main, test = _block_after("<!-- main-command -->"), _block_after("<!-- test-command -->")
    for cmd in (main, test):
        assert "pip install torch==2.13.0 &&" in cmd and "python3 -m venv .venv" in cmd
    assert main.strip().endswith("bayesdl tour --out tour")
    assert 'pip install -e ".[test]"' in test and "pytest" in test


def test_models_section_commands_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "new.npz", x=np.zeros((2, 10)))
    block = README.split("## Models", 1)[1]
    code = re.search(r"```bash\n(.*?)```", block, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in code.splitlines() if line.strip()]
    assert len(commands) >= 5
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "bayesdl"
        if argv[1] == "fit":
            argv += ["--quiet", "--steps", "300"]
        if argv[1] == "gradient-variance":
            argv[argv.index("--draws") + 1] = "200"
        assert cli.main(argv[1:]) == 0, command
    assert json.loads((tmp_path / "runs/coin/summary.json").read_text())["model"] == "coin"
    assert (tmp_path / "runs/linreg/evaluation.json").exists()


def test_python_section_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = re.search(r"## Python\n.*?```python\n(.*?)```", README, re.S).group(1)
    namespace: dict = {}
    exec(
        compile(code.replace("steps=2000", "steps=2000, progress=False"), "README", "exec"),
        namespace,
    )
    post = namespace["post"]
    assert post.summary(num_samples=2000)["b"]["mean"] == pytest.approx(0.5, abs=0.1)
    assert (tmp_path / "runs/line/summary.json").exists()


def test_pyro_pieces_section_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = re.search(r"## Python\n.*?```python\n(.*?)```", README, re.S).group(1)
    first = first.split("x = torch.linspace")[0] + "x = torch.linspace(-2, 2, 100)\n"
    first += "y = 1.0 + 0.5 * x + 0.3 * torch.randn(100)\n"
    code = re.search(r"### Pyro's own pieces\n.*?```python\n(.*?)```", README, re.S).group(1)
    fit = 'bayesdl.fit(model, data={"x": x, "y": y}, '
    code = code.replace("steps=2000, ", "").replace(fit, fit + "progress=False, steps=200, ")
    namespace: dict = {}
    exec(compile(first + code, "README", "exec"), namespace)
    assert namespace["post"].fit_info.steps == 200
    assert "log_likelihood" in namespace["idata"].groups()


def test_predict_input_snippet_makes_standardized_held_out_rows(tmp_path, monkeypatch):
    """The README's new.npz is the bundled split's first five test rows, standardized as
    the fit's data; predict writes them to .npz and to JSON alike."""
    from bayesdl.datasets.bundled import diabetes

    monkeypatch.chdir(tmp_path)
    code = re.search(r"<!-- predict-input -->\n```python\n(.*?)```", README, re.S).group(1)
    exec(compile(code, "README", "exec"), {})
    x = np.load(tmp_path / "new.npz")["x"]
    assert x.shape == (5, 10)
    assert np.allclose(x, diabetes().x_test[:5].numpy(), atol=1e-5)
    run = ["fit", "linreg", "--steps", "200", "--quiet", "--out", "runs/linreg"]
    assert cli.main(run) == 0
    predict = ["predict", "runs/linreg", "--input", "new.npz", "--output"]
    assert cli.main([*predict, "pred.npz"]) == 0 and cli.main([*predict, "pred.json"]) == 0
    npz, js = np.load(tmp_path / "pred.npz"), json.loads((tmp_path / "pred.json").read_text())
    assert set(npz.files) == set(js) >= {"mean", "std"}
    assert np.allclose(npz["mean"], js["mean"]) and npz["mean"].shape == (5,)


def test_any_network_section_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = re.search(r"## Any network, Bayesian\n.*?```python\n(.*?)```", README, re.S).group(1)
    namespace: dict = {}
    exec(
        compile(code.replace("steps=2000", "steps=2000, progress=False"), "README", "exec"),
        namespace,
    )
    u, post = namespace["u"], namespace["post"]
    assert post.params["sigma"].item() == pytest.approx(0.1, rel=0.3)
    assert u["sd_model"][0] > 2 * u["sd_model"][4]  # x = -6 against x = -2, among the data
    assert namespace["nxt"].prior.sigma0.shape == namespace["post"].model.guide.loc.shape


def test_sbc_section_runs(tmp_path, monkeypatch):
    """The SBC snippet, with 20 replications of 100 eager steps: mean field on correlated inputs
    comes out miscalibrated, too narrow, and sbc.json is written."""
    monkeypatch.chdir(tmp_path)
    code = re.search(
        r"## Simulation-based calibration\n.*?```python\n(.*?)```", README, re.S
    ).group(1)
    quick = "replications=20, num_draws=19, steps=100, lr=0.05, progress=False"
    assert "replications=100, compile=True" in code
    namespace: dict = {}
    exec(
        compile(code.replace("replications=100, compile=True", quick), "README", "exec"), namespace
    )
    result = namespace["result"]
    assert result.verdict == "miscalibrated" and not result.calibrated
    assert any("too narrow" in t.shape for t in result.tests if t.fails)
    assert (tmp_path / "runs/sbc/sbc.json").exists() and (
        tmp_path / "runs/sbc/sbc_ranks.png"
    ).exists()
