"""The command line as a user meets it: listing, errors (one line, exit 2), Ctrl-C and resume,
evaluate, gradient-variance."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli

import bayesdl.cli as cli


def test_list_names_every_model(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("coin", "linreg"):
        assert any(line.startswith(name + " ") for line in out.splitlines())


def _error(capsys, *argv: str) -> str:
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_error_cases_exit_2_with_one_line(tmp_path, capsys):
    out = str(tmp_path / "r")
    msg = _error(capsys, "fit", "nosuchmodel", "--out", out)
    assert "unknown model 'nosuchmodel'" in msg and "coin" in msg and "linreg" in msg
    assert "does not exist" in _error(
        capsys, "fit", "linreg", "--data", "missing.npz", "--out", out
    )
    (tmp_path / "bad.npz").write_text("not a zip")
    assert "cannot read" in _error(
        capsys, "fit", "linreg", "--data", str(tmp_path / "bad.npz"), "--out", out
    )
    np.savez(tmp_path / "nan.npz", x=np.array([[1.0], [np.nan], [2.0]]), y=np.ones(3))
    assert "NaN" in _error(
        capsys, "fit", "linreg", "--data", str(tmp_path / "nan.npz"), "--out", out
    )
    np.savez(tmp_path / "shape.npz", x=np.ones((5, 2)), y=np.ones(4))
    assert "x must be N x D" in _error(
        capsys, "fit", "linreg", "--data", str(tmp_path / "shape.npz"), "--out", out
    )
    assert "--steps must be positive" in _error(capsys, "fit", "coin", "--steps", "0", "--out", out)
    assert "--steps must be positive" in _error(
        capsys, "fit", "coin", "--steps", "-5", "--out", out
    )
    assert "coin flips must be 0 or 1" in _error(
        capsys, "fit", "coin", "--flips", "1,2", "--out", out
    )
    assert "integer or auto" in _error(capsys, "fit", "coin", "--steps", "many", "--out", out)
    assert "unknown command" in _error(capsys, "fitt")
    assert "no fitted run" in _error(capsys, "evaluate", str(tmp_path))
    if not torch.cuda.is_available():
        assert "no CUDA" in _error(capsys, "fit", "coin", "--device", "cuda", "--out", out)


def test_errors_have_no_traceback_in_a_real_process(tmp_path):
    p = run_cli("fit", "linreg", "--data", str(tmp_path / "none.csv"), "--out", str(tmp_path / "r"))
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "does not exist" in p.stderr


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert cli.main(["fit", "coin", "--steps", "20", "--quiet", "--out", out]) == 0
    assert "already holds a run" in _error(capsys, "fit", "coin", "--steps", "20", "--out", out)


def _final_params(run_dir) -> dict:
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    return state["param_store"]["params"]


@pytest.mark.slow  # over 45 s on 2 shared cores: run with -m slow
def test_ctrl_c_saves_and_resume_matches_uninterrupted(tmp_path):
    args = [
        "fit",
        "linreg",
        "--guide",
        "mean-field",
        "--steps",
        "4000",
        "--log-every",
        "100",
        "--checkpoint-every",
        "1000",
        "--batch-size",
        "64",
        "--quiet",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bayesdl", *args, "--out", str(run)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "--resume" in err
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert 300 <= state["step"] < 4000
    assert run_cli(*args, "--out", str(run), "--resume").returncode == 0
    straight = tmp_path / "straight"
    assert run_cli(*args, "--out", str(straight)).returncode == 0
    a, b = _final_params(run), _final_params(straight)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    s = json.loads((run / "summary.json").read_text())
    assert s["steps"] == 4000


def test_evaluate_writes_json(tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(["fit", "linreg", "--steps", "300", "--quiet", "--out", str(out)]) == 0
    assert cli.main(["evaluate", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "kl_to_exact" in printed
    e = json.loads((out / "evaluation.json").read_text())
    s = json.loads((out / "summary.json").read_text())
    assert e["kl_to_exact"] == pytest.approx(s["fitted"]["kl_to_exact"], rel=1e-6)


def test_gradient_variance_command(capsys):
    code = cli.main(["gradient-variance", "coin", "--heads", "6", "--tails", "4", "--draws", "300"])
    assert code == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert {r[0] for r in rows} == {"reparam", "score"}
    assert {r[1] for r in rows} == {"a_q", "b_q"}


def test_run_saved_before_an_option_existed_still_loads(tmp_path, capsys):
    """A config.json without a newer model option gets that option's default."""
    out = tmp_path / "r"
    assert cli.main(["fit", "linreg", "--steps", "50", "--quiet", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    del cfg["args"]["test_fraction"]
    (out / "config.json").write_text(json.dumps(cfg))
    assert cli.main(["evaluate", str(out)]) == 0
    assert json.loads((out / "evaluation.json").read_text())["kl_to_exact"] >= 0
