"""Issue 12, "Safe to share, hard to break": bad input is one line on stderr and exit status 2,
never a traceback; runs are never lost (tour, a second writer, --resume with other settings);
evaluate, predict and sample take --seed.

Each case runs ``python -m bayesdl`` as a user would (a fresh process: no traceback reaches
stderr); matrices of cases whose only difference is the input run in this process through
:func:`bayesdl.cli.main`, which writes the same line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints

import bayesdl.cli as cli
from bayesdl.inference import checkpoint as ckpt
from bayesdl.inference import train
from bayesdl.inference.errors import UserError
from bayesdl.inference.train import FitConfig, Interrupted

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
COIN = ["coin", "--heads", "3", "--tails", "1", "--steps", "20", "--quiet"]


def _chmod_stops_writes() -> bool:
    """Whether a folder of mode 0o555 refuses this process's writes (not so for root, or for a
    process with CAP_DAC_OVERRIDE)."""
    if os.geteuid() != 0:
        return True
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o555)
        try:
            Path(d, "probe").touch()
        except PermissionError:
            return True
        finally:
            os.chmod(d, 0o755)
    return False


read_only_folders = pytest.mark.skipif(
    not _chmod_stops_writes(), reason="this user writes into read-only folders (root)"
)

# Pyro's shape check fails at site "y": x has 8 values and no plate encloses them
NO_PLATE = """
import pyro
import pyro.distributions as dist


def model(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.Normal(w * x, 1.0), obs=y)
"""

# errors that Pyro does not attribute to a site: bayesdl says where they arose
WHERE = """
import pyro
import pyro.distributions as dist
import torch


class Broken(dist.Normal):
    def rsample(self, sample_shape=torch.Size()):
        raise RuntimeError("cannot draw")


def between(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    k = pyro.sample("k", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    pyro.sample("y", dist.Normal(w * x + k, 1.0).to_event(1), obs=y)


def inside(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    v = pyro.sample("v", Broken(0.0, 1.0))
    pyro.sample("y", dist.Normal(w * x + v, 1.0).to_event(1), obs=y)
"""

# a regression whose prediction is Monte Carlo (1000 posterior draws of y)
REGRESSION = """
import pyro
import pyro.distributions as dist


def model(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(w * x, sigma), obs=y)
"""


def bayesdl(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m bayesdl ARGS`` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "bayesdl", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def one_line(err: str) -> str:
    """The single non-empty line of ``err``, which must say "error" and hold no traceback."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "error" in lines[0], err
    return lines[0]


def error_line(p: subprocess.CompletedProcess) -> str:
    """Exit status 2 and one error line on stderr; that line."""
    assert p.returncode == 2, p.stderr
    return one_line(p.stderr)


def main_error(capsys, *argv) -> str:
    """:func:`bayesdl.cli.main` in this process: status 2 and one error line; that line."""
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    return one_line(err)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the lock file included), by relative path: its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def coin_run(tmp_path_factory) -> Path:
    """A finished coin run fitted from a flips file: ``DIR/run`` and ``DIR/flips.csv``."""
    d = tmp_path_factory.mktemp("coin")
    (d / "flips.csv").write_text("1\n0\n1\n1\n")
    out = d / "run"
    p = bayesdl("fit", "coin", "--data", d / "flips.csv", "--steps", 20, "--quiet", "--out", out)
    assert p.returncode == 0, p.stderr
    return out


@pytest.fixture
def run(coin_run, tmp_path) -> Path:
    """A copy of the coin run and of its flips file (config.json pointing at the copy), for one
    test to change."""
    shutil.copy(coin_run.parent / "flips.csv", tmp_path / "flips.csv")
    out = Path(shutil.copytree(coin_run, tmp_path / "run"))
    cfg = json.loads((out / "config.json").read_text())
    cfg["args"]["data"] = str(tmp_path / "flips.csv")
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return out


def flips_args(run: Path) -> list:
    return ["fit", "coin", "--data", run.parent / "flips.csv", "--steps", 20, "--quiet"]


# ------------------------------------------------------------------ 1. one line, not a traceback


@pytest.mark.parametrize("seed", ["-1", "1e20", str(2**32)])
def test_a_seed_out_of_range_is_one_line(tmp_path, seed):
    line = error_line(bayesdl("fit", *COIN, "--seed", seed, "--out", tmp_path / "r"))
    assert "--seed" in line and "2**32-1" in line
    assert not (tmp_path / "r").exists()


def test_fit_config_validates_the_seed():
    FitConfig(seed=2**32 - 1).validate()
    for bad in (-1, 2**32, 10**20, 1.5, True):
        with pytest.raises(UserError, match="--seed"):
            FitConfig(seed=bad).validate()


@pytest.mark.parametrize(
    "option",
    [
        ("--lr", "inf"),
        ("--lr", "nan"),
        ("--lr", "-inf"),
        ("--clip-norm", "inf"),
        ("--clip-norm", "nan"),
        ("--lr-warmup", "-1"),
        ("--kl-warmup-start", "-3"),
        ("--kl-warmup", "-2"),
    ],
)
def test_impossible_engine_settings_are_refused_up_front(tmp_path, capsys, option):
    line = main_error(capsys, "fit", *COIN, *option, "--out", tmp_path / "r")
    assert option[0] in line
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_bad_engine_settings_in_a_real_process(tmp_path):
    assert "--lr" in error_line(bayesdl("fit", *COIN, "--lr", "inf", "--out", tmp_path / "r"))


def test_out_under_a_file(tmp_path):
    (tmp_path / "somefile").write_text("not a folder")
    line = error_line(bayesdl("fit", *COIN, "--out", tmp_path / "somefile" / "run"))
    assert "somefile" in line
    assert (tmp_path / "somefile").read_text() == "not a folder"


@read_only_folders
def test_out_in_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "existing").mkdir()
    ro.chmod(0o555)
    (ro / "existing").chmod(0o555)
    try:
        for out in (ro / "run", ro / "deeper" / "run", ro / "existing"):
            line = error_line(bayesdl("fit", *COIN, "--out", out))
            assert "read-only" in line or "Permission denied" in line
            assert not (out / "config.json").exists()
    finally:
        (ro / "existing").chmod(0o755)
        ro.chmod(0o755)


@pytest.mark.parametrize("content", ["{bad", "", "[1, 2]", '{"args": {}}'])
def test_a_broken_config_json_is_one_line(run, tmp_path, capsys, content):
    (run / "config.json").write_text(content)
    np.savez(tmp_path / "in.npz", flips=np.array([1, 0]))
    for argv in (
        ["evaluate", run],
        ["predict", run, "--input", tmp_path / "in.npz"],
        ["sample", run],
    ):
        assert "config.json" in main_error(capsys, *argv)


def test_a_broken_config_json_in_a_real_process(run):
    (run / "config.json").write_text("[1, 2]")
    assert "config.json" in error_line(bayesdl("evaluate", run))


@read_only_folders
def test_evaluate_on_a_read_only_run(run):
    run.chmod(0o555)
    try:
        before = snapshot(run)
        assert "read-only" in error_line(bayesdl("evaluate", run))
        assert snapshot(run) == before
    finally:
        run.chmod(0o755)


def test_evaluate_that_cannot_write_its_result(run):
    (run / "evaluation.json").mkdir()  # what root cannot write either
    assert "evaluation.json" in error_line(bayesdl("evaluate", run))


def test_predict_output_into_a_missing_folder_or_under_a_file(run, tmp_path, capsys):
    np.savez(tmp_path / "in.npz", flips=np.array([1, 0]))
    line = error_line(
        bayesdl("predict", run, "--input", tmp_path / "in.npz", "--output", tmp_path / "no" / "p")
    )
    assert "cannot write" in line
    (tmp_path / "afile").write_text("x")
    line = main_error(
        capsys, "predict", run, "--input", tmp_path / "in.npz", "--output", tmp_path / "afile/p"
    )
    assert "cannot write" in line


def test_predict_output_to_a_device_is_refused(run, tmp_path, capsys):
    # bayesdl writes regular files only (leave out --output to print the predictions)
    np.savez(tmp_path / "in.npz", flips=np.array([1, 0]))
    before = os.stat(os.devnull)
    argv = ["predict", run, "--input", tmp_path / "in.npz", "--output", os.devnull]
    line = main_error(capsys, *argv, "--overwrite")
    assert os.devnull in line and "device" in line
    after = os.stat(os.devnull)
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino  # not replaced


def test_predict_output_through_a_link_is_refused(run, tmp_path, capsys):
    np.savez(tmp_path / "in.npz", flips=np.array([1, 0]))
    (tmp_path / "target.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "target.json")
    argv = ["predict", run, "--input", tmp_path / "in.npz", "--output", tmp_path / "link.json"]
    for extra in ([], ["--overwrite"]):
        assert "symbolic link" in main_error(capsys, *argv, *extra)
    assert (tmp_path / "link.json").is_symlink()
    assert (tmp_path / "target.json").read_text() == "{}"


def test_a_run_folder_made_unwritable_mid_run_in_a_real_process(tmp_path):
    # root writes through chmod: a file size limit stops the first checkpoint (step 10 of 20,
    # 18 kB) for everyone, after config.json and the first metrics rows were written
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    out = tmp_path / "r"
    p = subprocess.run(
        [sys.executable, "-m", "bayesdl", "fit", *COIN, "--checkpoint-every", "10", "--out",
         str(out)],
        capture_output=True, text=True, env=ENV, timeout=600, preexec_fn=limit,
    )  # fmt: skip
    line = error_line(p)
    assert "checkpoint" in line and str(out) in line and "too large" in line, line
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]  # no temporary file left


def test_a_failed_checkpoint_write_names_the_file(tmp_path, capsys, monkeypatch):
    real, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:  # the first checkpoint is written, then the folder turns read-only
            raise PermissionError(13, "Permission denied")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", save)
    out = tmp_path / "r"
    line = main_error(capsys, "fit", *COIN, "--checkpoint-every", 5, "--out", out)
    assert f"cannot write checkpoint {out / 'checkpoint.pt'}" in line
    assert "Permission denied" in line
    assert not (out / "checkpoint.pt.tmp").exists()
    assert ckpt.load(out / "checkpoint.pt")["step"] == 5  # the last good checkpoint is kept


def test_a_failed_metrics_write_names_the_file(tmp_path, capsys, monkeypatch):
    real = os.open

    def guarded(path, flags, *args, **kwargs):
        if str(path).endswith("metrics.jsonl") and flags & os.O_APPEND:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded)
    out = tmp_path / "r"
    line = main_error(capsys, "fit", *COIN, "--log-every", 5, "--out", out)
    assert f"cannot write {out / 'metrics.jsonl'}" in line


@read_only_folders
def test_a_run_folder_made_read_only_mid_run(tmp_path):
    out = tmp_path / "r"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bayesdl",
            "fit",
            "linreg",
            "--steps",
            "100000",
            "--log-every",
            "50",
            "--checkpoint-every",
            "200",
            "--quiet",
            "--out",
            str(out),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        _wait_for(lambda: (out / "metrics.jsonl").exists(), proc)
        out.chmod(0o555)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert str(out) in one_line(err)
    finally:
        out.chmod(0o755)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_shape_error_keeps_pyros_hint_and_names_the_site(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(NO_PLATE)
    np.savez(tmp_path / "d.npz", x=np.arange(8.0), y=np.arange(8.0))
    p = bayesdl(
        "fit",
        f"{f}:model",
        "--data",
        tmp_path / "d.npz",
        "--steps",
        20,
        "--quiet",
        "--out",
        tmp_path / "r",
    )
    line = error_line(p)
    assert "Expected [], actual [8]" in line
    assert "pyro.plate" in line and ".to_event" in line
    assert 'site "y"' in line and "at or after" not in line and "site 'w'" not in line
    assert not (tmp_path / "r").exists()


def test_an_error_between_sites_and_inside_one_name_the_right_site(tmp_path, capsys):
    f = tmp_path / "where.py"
    f.write_text(WHERE)
    np.savez(tmp_path / "d.npz", x=np.arange(8.0), y=np.arange(8.0))
    common = ["--data", tmp_path / "d.npz", "--steps", 20, "--quiet", "--out", tmp_path / "r"]
    # w * x + k: 8 vs 3, raised while building y's distribution, after site k completed
    line = main_error(capsys, "fit", f"{f}:between", *common)
    assert "after site 'k'" in line and "line 15" in line
    # raised while site v draws
    line = main_error(capsys, "fit", f"{f}:inside", *common)
    assert "cannot draw" in line and "at site 'v'" in line


# ----------------------------------------------------------------------------- 2. lost runs


def test_tour_never_replaces_an_existing_run(tmp_path):
    d = tmp_path / "tour"
    for name in ("coin", "coin-1-beta"):  # the model's name, and its first tour run's folder
        assert bayesdl("fit", *COIN, "--out", d / name).returncode == 0
    before = snapshot(d)
    line = error_line(bayesdl("tour", "--out", d, "--only", "coin", "--quiet"))
    assert str(d / "coin-1-beta") in line and "--overwrite" in line and "--out" in line
    assert snapshot(d) == before  # nothing fitted, replaced or added
    assert sorted(p.name for p in d.iterdir()) == ["coin", "coin-1-beta"]


def test_tour_has_an_overwrite_flag(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["tour", "--help"])
    assert e.value.code == 0
    assert "--overwrite" in capsys.readouterr().out


def _wait_for(ready, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended early: {proc.stderr.read()}")
        if time.time() > deadline:
            raise AssertionError("timed out waiting for the process")
        time.sleep(0.05)


def test_a_second_concurrent_fit_is_refused(tmp_path, capsys):
    """A fit in another process holds the folder: this process's fits, overwrite and resume
    included, are refused in one line (the lock is the folder's, not a process's)."""
    out = tmp_path / "r"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bayesdl",
            "fit",
            "linreg",
            "--steps",
            "1000000",
            "--log-every",
            "20",
            "--checkpoint-every",
            "100000",
            "--quiet",
            "--out",
            str(out),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        # holding the lock and training (a first metrics row)
        _wait_for(lambda: (out / ".bayesdl.lock").exists(), first)
        _wait_for(lambda: (out / "metrics.jsonl").exists(), first)
        config = (out / "config.json").read_bytes()
        for extra in ([], ["--overwrite"], ["--resume"]):
            line = main_error(
                capsys, "fit", "linreg", "--steps", 20, "--quiet", "--out", out, *extra
            )
            assert "another bayesdl process is writing" in line
        assert (out / "config.json").read_bytes() == config
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGTERM)  # saves a checkpoint and ends
        try:
            first.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            first.kill()
            first.communicate()


def test_fit_into_a_run_without_checkpoint_needs_overwrite(run, capsys):
    (run / "checkpoint.pt").unlink()
    (run / "metrics.jsonl").unlink()
    before = snapshot(run)
    line = error_line(bayesdl(*flips_args(run), "--out", run))
    assert "--overwrite" in line and "--resume to" not in line
    assert snapshot(run) == before
    assert "no checkpoint" in main_error(capsys, *flips_args(run), "--out", run, "--resume")
    assert cli.main([*map(str, flips_args(run)), "--out", str(run), "--overwrite"]) == 0


# ---------------------------------------------------------------------------------- 3. resume


@pytest.mark.parametrize(
    "change",
    [["--lr", "0.5"], ["--seed", "5"], ["--guide", "map"], "data"],
    ids=["lr", "seed", "guide", "data"],
)
def test_resume_with_other_settings_is_refused(run, change):
    config, checkpoint = (run / "config.json").read_bytes(), digest(run / "checkpoint.pt")
    if change == "data":
        (run.parent / "flips.csv").write_text("1\n0\n0\n1\n")
        change, what = [], "data (the file's contents changed)"
    else:
        what = change[0]
    p = bayesdl(*flips_args(run), "--steps", 40, "--out", run, "--resume", *change)
    line = error_line(p)
    assert what in line and "--data" not in line  # the one change, named
    assert (run / "config.json").read_bytes() == config
    assert digest(run / "checkpoint.pt") == checkpoint


def test_a_run_stopped_after_its_final_checkpoint_is_finished_by_resume(run):
    (run / "summary.json").unlink()
    p = bayesdl(*flips_args(run), "--out", run, "--resume")
    assert p.returncode == 0, p.stderr
    assert json.loads((run / "summary.json").read_text())["steps"] == 20


def test_a_torn_metrics_line_does_not_block_resume(run):
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 1')  # killed mid-write: no newline
    p = bayesdl(*flips_args(run), "--steps", 40, "--out", run, "--resume")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})
    assert rows[-1]["step"] == 40


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    out = tmp_path / "r"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bayesdl",
            "fit",
            "linreg",
            "--steps",
            "20",
            "--quiet",
            "--out",
            str(out),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    time.sleep(0.3)  # importing torch and Pyro: long before training starts
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (130, 2), err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err, err
    assert not out.exists()


def test_ctrl_c_outside_the_training_loop_is_one_line(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("bayesdl.fits.svi.build", interrupted)
    capsys.readouterr()
    assert cli.main(["fit", *COIN, "--out", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "bayesdl: interrupted; nothing was saved"


def _model(x):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=x)


def _guide(x):
    loc = pyro.param("loc", torch.tensor(0.0))
    scale = pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)
    pyro.sample("mu", dist.Normal(loc, scale))


def _rows(out: Path) -> list[tuple[int, float]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["elbo"]) for r in map(json.loads, lines)]


@pytest.mark.parametrize("stop", [5, 15, 20])
def test_resume_mid_log_window_logs_the_whole_window(tmp_path, stop):
    data = {"x": torch.linspace(0.0, 2.0, 10)}

    def config():
        return FitConfig(steps=30, lr=0.05, log_every=10, checkpoint_every=1000)

    train.fit(_model, _guide, data, config(), tmp_path / "straight", progress=False)
    with pytest.raises(Interrupted):
        train.fit(
            _model, _guide, data, config(), tmp_path / "cut", progress=False, stop_at_step=stop
        )
    train.fit(_model, _guide, data, config(), tmp_path / "cut", progress=False, resume=True)
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "straight")
    assert [s for s, _ in _rows(tmp_path / "cut")] == [10, 20, 30]


# ---------------------------------------------------------------------------------- 4. --seed


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("regression")
    (d / "m.py").write_text(REGRESSION)
    x = np.linspace(-1.0, 1.0, 10)
    np.savez(d / "d.npz", x=x, y=2 * x + 0.1)
    np.savez(d / "new.npz", x=np.array([0.5, 1.5]))
    out = d / "run"
    p = bayesdl(
        "fit", f"{d / 'm.py'}:model", "--data", d / "d.npz", "--steps", 20, "--quiet", "--out", out
    )
    assert p.returncode == 0, p.stderr
    return out, d / "new.npz"


def test_predict_is_reproducible_and_seedable(regression_run, capsys):
    run, new = regression_run
    a, b = (bayesdl("predict", run, "--input", new) for _ in range(2))
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout  # the run's seed by default

    def predict(*extra) -> dict:
        capsys.readouterr()
        assert cli.main(["predict", str(run), "--input", str(new), *extra]) == 0
        return json.loads(capsys.readouterr().out)

    seed0 = json.loads(a.stdout)
    assert predict("--seed", "0") == seed0  # the run was fitted with --seed 0
    other = predict("--seed", "1")
    assert other != seed0 and other == predict("--seed", "1")


def test_evaluate_takes_seed(regression_run, capsys):
    run, _ = regression_run

    def elbo(*extra) -> float:
        assert cli.main(["evaluate", str(run), *extra]) == 0
        return json.loads((run / "evaluation.json").read_text())["elbo"]

    assert elbo() == elbo("--seed", "0")
    assert elbo("--seed", "7") == elbo("--seed", "7") != elbo()


@pytest.mark.parametrize("command", ["evaluate", "predict", "sample"])
def test_seed_of_evaluate_predict_sample_is_checked(regression_run, capsys, command):
    run, new = regression_run
    extra = ["--input", new] if command == "predict" else []
    assert "--seed" in main_error(capsys, command, run, *extra, "--seed", "-1")
