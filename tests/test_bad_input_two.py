"""Issue 22, "Safe to share, round two", the input side: --resume refuses changed code, an edited
model file is re-read, a model's exception mid-fit is one line that keeps its message, file and
line and the last checkpoint, and the Python API's bad data and predict inputs, --threads
beyond the machine, float32 overflow and R's quoted CSV header are one clear line (CLI, status
2) or a ``bayesdl.UserError`` (Python).

Each test failed on the code before this issue (see the issue's list of cases).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints

import bayesdl
import bayesdl.cli as cli
from bayesdl.inference import checkpoint as ckpt

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
COIN = ["coin", "--heads", "3", "--tails", "1", "--steps", "20", "--quiet"]

LINE = """
import pyro
import pyro.distributions as dist


def model(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(w * x, 1.0), obs=y)
"""

GUIDE = """
import pyro
import pyro.distributions as dist
from pyro.distributions import constraints


def guide(x, y=None):
    loc = pyro.param("loc", lambda: x.new_zeros(()))
    scale = pyro.param("scale", lambda: x.new_ones(()), constraint=constraints.positive)
    pyro.sample("w", dist.Normal(loc, scale))
"""

# raises at the 31st call (the checks before the fit call it a few times): mid-fit
RAISES = """
import pyro
import pyro.distributions as dist

CALLS = [0]


def model(x, y=None):
    CALLS[0] += 1
    if CALLS[0] > 30:
        raise {error}
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(w * x, 1.0), obs=y)
"""
RAISE_LINE = RAISES.splitlines().index("        raise {error}") + 1  # its line in the file


def bayesdl_cli(*args) -> subprocess.CompletedProcess:
    """``python -m bayesdl ARGS`` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "bayesdl", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "error" in lines[0], err
    return lines[0]


def error_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, p.stderr
    return one_line(p.stderr)


def main_error(capsys, *argv) -> str:
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    return one_line(err)


@pytest.fixture
def line_files(tmp_path) -> Path:
    (tmp_path / "m.py").write_text(LINE)
    (tmp_path / "g.py").write_text(GUIDE)
    x = np.linspace(-1.0, 1.0, 10)
    np.savez(tmp_path / "d.npz", x=x, y=2 * x + 0.1)
    return tmp_path


def fit_args(d: Path, *extra) -> list:
    return ["fit", f"{d / 'm.py'}:model", "--data", d / "d.npz", *extra, "--quiet"]


# ------------------------------------------------------------------ 1. resume refuses new code


def test_resume_refuses_a_changed_model_file(line_files):
    d = line_files
    out = d / "run"
    assert bayesdl_cli(*fit_args(d, "--steps", 20), "--out", out).returncode == 0
    recorded = json.loads((out / "config.json").read_text())["model_file"]["sha256"]
    p = bayesdl_cli(*fit_args(d, "--steps", 40), "--out", out, "--resume")
    assert p.returncode == 0, p.stderr  # the same code: continues
    (d / "m.py").write_text(LINE.replace("Normal(0.0, 1.0)", "Normal(0.0, 5.0)"))
    line = error_line(bayesdl_cli(*fit_args(d, "--steps", 60), "--out", out, "--resume"))
    assert "--resume" in line and "model file" in line and "changed" in line
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_file"]["sha256"] == recorded  # the run's record is left as it was
    assert ckpt.load(out / "checkpoint.pt")["step"] == 40


def test_resume_refuses_a_changed_guide_file(line_files, capsys):
    d = line_files
    out = d / "run"
    guide = ["--guide", f"{d / 'g.py'}:guide", "--steps", 20]
    assert cli.main([str(a) for a in fit_args(d, *guide)] + ["--out", str(out)]) == 0
    (d / "g.py").write_text(GUIDE + "\n# edited\n")
    line = main_error(capsys, *fit_args(d, *guide[:2], "--steps", 40), "--out", out, "--resume")
    assert "guide file" in line and "changed" in line


def test_resume_refuses_a_changed_net_file(tmp_path, capsys):
    net = "from torch import nn\n\n\ndef make_net():\n    return nn.Sequential(nn.Linear(1, 1))\n"
    (tmp_path / "net.py").write_text(net)
    x = np.linspace(-1.0, 1.0, 20, dtype=np.float32)[:, None]
    np.savez(tmp_path / "d.npz", x=x, y=2 * x[:, 0])
    out = tmp_path / "run"
    argv = ["fit", "bnn", "--net", f"{tmp_path / 'net.py'}:make_net", "--likelihood", "gaussian"]
    argv += ["--data", tmp_path / "d.npz", "--quiet", "--out", out]
    assert cli.main([str(a) for a in [*argv, "--steps", "10"]]) == 0
    assert "net_file" in json.loads((out / "config.json").read_text())
    (tmp_path / "net.py").write_text(net.replace("Linear(1, 1)", "Linear(1, 1), nn.Tanh()"))
    line = main_error(capsys, *argv, "--steps", "20", "--resume")
    assert "net file" in line and "changed" in line


# ------------------------------------------------------------------ 2. an edited file is re-read

MEAN = """
import pyro
import pyro.distributions as dist


def model(y=None):
    mu = pyro.sample("mu", dist.Normal(LOC, 0.1))
    with pyro.plate("data", 5):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
"""


def test_an_edited_model_file_is_fitted_as_edited(tmp_path):
    np.savez(tmp_path / "y.npz", y=np.zeros(5))
    path = tmp_path / "m.py"

    def fitted_mean() -> float:  # the autoguide starts at the prior's median: LOC
        post = bayesdl.fit(
            f"{path}:model", data=tmp_path / "y.npz", init="median", steps=5, progress=False
        )
        return post.summary(num_samples=200)["mu"]["mean"]

    path.write_text("LOC = 100.0\n" + MEAN)
    assert fitted_mean() > 90
    path.write_text("LOC = -100.0\n" + MEAN)  # edited in the same session
    assert fitted_mean() < -90


def test_an_unchanged_file_is_imported_once_and_plugins_follow_edits(tmp_path):
    from bayesdl.workflows.user_model import load_module

    plugin = (
        "from bayesdl.workflows.registry import register\n"
        "from bayesdl.workflows.user_model import UserModel\n\n\n"
        "@register\nclass Mine(UserModel):\n    name = 'mine-22'\n    description = {!r}\n"
    )
    path = tmp_path / "plug.py"
    path.write_text(plugin.format("first"))
    assert load_module(path) is load_module(path)  # imported once while unchanged
    assert bayesdl.registry(plugins=[str(path)])["mine-22"].description == "first"
    path.write_text(plugin.format("second"))
    assert bayesdl.registry(plugins=[str(path)])["mine-22"].description == "second"
    assert not (tmp_path / "__pycache__").exists()  # nothing written next to the user's file


# ------------------------------------------------------------------ 3. a model raising mid-fit


@pytest.mark.parametrize("error", ["KeyError('no such column')", "MemoryError()"])
def test_a_model_raising_mid_fit_is_one_line_and_keeps_the_checkpoint(tmp_path, error):
    (tmp_path / "m.py").write_text(RAISES.format(error=error))
    x = np.linspace(-1.0, 1.0, 10)
    np.savez(tmp_path / "d.npz", x=x, y=2 * x)
    out = tmp_path / "run"
    p = bayesdl_cli(
        "fit",
        f"{tmp_path / 'm.py'}:model",
        "--data",
        tmp_path / "d.npz",
        "--steps",
        40,
        "--checkpoint-every",
        10,
        "--quiet",
        "--out",
        out,
    )
    line = error_line(p)
    kept = ckpt.load(out / "checkpoint.pt")["step"]
    assert kept == 20 and f"checkpoint (step {kept}) is kept" in line
    if error.startswith("KeyError"):
        assert "KeyError: 'no such column'" in line
        assert f"{tmp_path / 'm.py'}, line {RAISE_LINE}, in model" in line
    else:
        assert "out of memory" in line and "MemoryError" in line


def test_a_model_raising_mid_fit_from_python(tmp_path):
    (tmp_path / "raising_22.py").write_text(RAISES.format(error="ZeroDivisionError('oops')"))
    sys.path.insert(0, str(tmp_path))
    try:
        import raising_22
    finally:
        sys.path.remove(str(tmp_path))
    x = torch.linspace(-1.0, 1.0, 10)
    with pytest.raises(bayesdl.UserError) as info:
        bayesdl.fit(raising_22.model, data={"x": x, "y": 2 * x}, steps=40, progress=False)
    message = str(info.value)
    assert "ZeroDivisionError: oops" in message and f"line {RAISE_LINE}, in model" in message
    assert "\n" not in message and isinstance(info.value.__cause__, ZeroDivisionError)


# ------------------------------------------------------------------ 4. the Python API's inputs


def line_model(x, y=None):
    a = pyro.sample("a", dist.Normal(0.0, 10.0))
    sigma = pyro.param("sigma", torch.tensor(1.0), constraint=constraints.positive)
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(a * x, sigma), obs=y)


@pytest.mark.parametrize(
    "x, words",
    [
        (np.array([1.0, "a", None], dtype=object), ["dtype object", "'a'"]),
        (np.array([1.0 + 1j, 2.0, 3.0]), ["complex"]),  # numpy would drop the imaginary part
        (torch.tensor([1.0 + 1j, 2.0, 3.0]), ["complex tensor"]),
        (np.array([1e39, 2.0, 3.0]), ["1e+39", "float32", "rescale"]),
    ],
)
def test_bad_python_data_is_a_user_error(x, words):
    with pytest.raises(bayesdl.UserError) as info:
        bayesdl.fit(line_model, data={"x": x, "y": np.ones(3)}, steps=5, progress=False)
    assert "data['x']" in str(info.value) and all(w in str(info.value) for w in words)


def test_an_object_array_of_numbers_is_fitted_as_numbers():
    x = np.array([1.0, 2.0, 3.0], dtype=object)
    a = bayesdl.fit(line_model, data={"x": x, "y": np.ones(3)}, steps=5, seed=3, progress=False)
    b = bayesdl.fit(
        line_model, data={"x": x.astype(float), "y": np.ones(3)}, steps=5, seed=3, progress=False
    )
    assert a.elbo == b.elbo


@pytest.fixture(scope="module")
def line_post():
    x = torch.linspace(-1.0, 1.0, 50)
    return bayesdl.fit(line_model, data={"x": x, "y": 2 * x}, steps=50, progress=False)


@pytest.mark.parametrize(
    "data, words",
    [
        ({"z": torch.ones(3)}, ["'z' is not an argument of line_model()", "it takes: x, y"]),
        ({"x": torch.ones(3, 2)}, ["shape (3, 2)", "fitted with x of shape [N]"]),
        ({"x": torch.ones(3, 1)}, ["shape (3, 1)"]),  # would broadcast to [3, 3] silently
        ({"x": torch.tensor([1.0, float("nan")])}, ["NaN or infinite", "index [1]"]),
        ({"x": np.array([1 + 2j])}, ["complex"]),
        ({"x": np.array(["a"])}, ["not numeric"]),
    ],
)
def test_bad_predict_inputs_are_a_user_error(line_post, data, words):
    with pytest.raises(bayesdl.UserError) as info:
        line_post.predict(data, num_samples=10)
    assert str(info.value).startswith("predict") and all(w in str(info.value) for w in words)
    assert line_post.predict({"x": torch.ones(3)}, num_samples=10)["y"].shape == (10, 3)


def test_a_model_failing_at_predict_time_is_a_user_error(line_post):
    with pytest.raises(bayesdl.UserError, match="predict: .*Error"):
        line_post.predict({"x": "not a tensor"}, num_samples=10)


def test_predict_from_the_command_line_refuses_another_shape(line_files):
    d = line_files
    out = d / "run"
    assert bayesdl_cli(*fit_args(d, "--steps", 20), "--out", out).returncode == 0
    np.savez(d / "new.npz", x=np.ones((3, 2)))
    line = error_line(bayesdl_cli("predict", out, "--input", d / "new.npz"))
    assert "shape (3, 2)" in line and "x of shape [N]" in line


# ------------------------------------------------------------------ 5. --threads, data messages


def test_threads_beyond_the_machine_are_refused(tmp_path, capsys):
    many = str(100_000)  # torch accepts it, then crashes (segmentation fault) in a matmul
    assert "--threads" in main_error(capsys, "fit", *COIN, "--threads", many, "--out", tmp_path)
    assert "--threads" in main_error(capsys, "tour", "--threads", many, "--out", tmp_path / "t")
    with pytest.raises(bayesdl.UserError, match="this machine's CPUs"):
        bayesdl.fit("coin", heads=3, tails=1, steps=5, threads=100_000, progress=False)
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_a_value_beyond_float32_says_so(tmp_path, suffix):
    (tmp_path / "m.py").write_text(LINE)
    if suffix == ".csv":
        (tmp_path / "d.csv").write_text("x,y\n1,2\n1e39,4\n3,6\n")
    else:
        np.savez(tmp_path / "d.npz", x=np.array([1.0, 1e39, 3.0]), y=np.ones(3))
    p = bayesdl_cli(
        "fit",
        f"{tmp_path / 'm.py'}:model",
        "--data",
        tmp_path / f"d{suffix}",
        "--steps",
        5,
        "--quiet",
        "--out",
        tmp_path / "run",
    )
    line = error_line(p)  # one line: no numpy overflow warnings before it
    assert "1e+39" in line and "index [1]" in line and "float32" in line
    assert "rescale" in line and "NaN or infinite" not in line


def test_a_quoted_csv_header_is_read_as_pandas_reads_it(tmp_path, capsys):
    (tmp_path / "m.py").write_text(LINE)
    rows = "1,2.1\n2,3.9\n3,6.2\n"
    (tmp_path / "plain.csv").write_text("x,y\n" + rows)
    (tmp_path / "quoted.csv").write_text('"x","y"\n' + rows)  # R's write.csv(row.names = FALSE)
    sums = []
    for name in ("plain", "quoted"):
        argv = ["fit", f"{tmp_path / 'm.py'}:model", "--data", str(tmp_path / f"{name}.csv")]
        assert cli.main([*argv, "--steps", "30", "--quiet", "--out", str(tmp_path / name)]) == 0
        sums.append(json.loads((tmp_path / name / "summary.json").read_text())["final_elbo"])
    assert sums[0] == sums[1]
    (tmp_path / "rownames.csv").write_text('"","x","y"\n"1",1,2\n"2",2,4\n')  # write.csv(df)
    line = main_error(
        capsys,
        "fit",
        f"{tmp_path / 'm.py'}:model",
        "--data",
        tmp_path / "rownames.csv",
        "--out",
        tmp_path / "r",
    )
    assert "column 0 has no name" in line and "row.names = FALSE" in line
