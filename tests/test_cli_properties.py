"""Issue 12, property-based: whatever the options and the data file, the command line ends with
status 0 or 2 (one ``bayesdl: error:`` line), never a traceback, and writes nothing outside
its run folder.

Generated: ``fit`` commands of coin, linreg and a user model file with option values that are
negative, zero, huge, ``nan``/``inf``, not numbers, unknown flags and ``--help``; data files
(``.npz``, ``.npy``, ``.csv``) of any shape and dtype (ints, uints, complex, bool, strings,
Python objects, NaN and inf), ragged CSV rows, duplicate column names, empty or garbage files,
fed to ``fit``, then ``evaluate`` and ``predict``. The CLI runs in this process
(:func:`bayesdl.cli.main`); every fit is at most 20 steps.

More examples: ``BAYESDL_PROPERTY_EXAMPLES=500 pytest tests/test_cli_properties.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bayesdl.cli as cli

EXAMPLES = int(os.environ.get("BAYESDL_PROPERTY_EXAMPLES", "25"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # writes nothing into the repository (.hypothesis/)
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

USER_MODEL = """
import pyro
import pyro.distributions as dist


def model(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(w * x, sigma), obs=y)
"""

BAD_NUMBERS = ["0", "-1", "1e-30", "1e308", "1e400", "inf", "-inf", "nan", "x", ""]
BAD_COUNTS = ["0", "-1", "-7", "4294967296", "1e3", "x", "", "nan"]

# option -> (good values, bad ones: negative, zero, huge, nan/inf, not numbers); steps (and
# threads, which are process-wide) are not among them: every command ends with --steps <= 20
ENGINE = {
    "--lr": (["0.01", "0.1"], BAD_NUMBERS),
    "--seed": (["0", "7", "4294967295"], ["-1", "4294967296", "1e20", "nan", "x"]),
    "--particles": (["1", "2"], ["0", "-1", "x"]),
    "--batch-size": (["1", "3", "100000", "none", "full", "0"], ["-1", "x"]),
    "--lr-schedule": (["constant", "linear", "cosine"], ["nope"]),
    "--lr-warmup": (["0", "5", "1000000000"], ["-1", "x"]),
    "--clip-norm": (["1", "1e-30", "1e308"], ["0", "-1", "inf", "nan", "x"]),
    "--kl-warmup": (["0", "3", "1000000000"], ["-1"]),
    "--kl-warmup-start": (["0", "3", "1000000000"], ["-1"]),
    "--log-every": (["1", "5", "1000000000"], ["0", "-1"]),
    "--checkpoint-every": (["1", "7", "1000000000"], ["0", "-5"]),
    "--optimizer": (["adam", "adamw", "sgd"], ["nope"]),
    "--estimator": (["reparam", "score", "meanfield"], ["enum", "relaxed", "bogus"]),
    "--device": (["cpu"], ["cuda:99", "tpu"]),
    "--plugin": ([], ["/nonexistent/plugin.py"]),
}
MODEL_OPTIONS = {
    "coin": {
        "--heads": (["0", "1", "3", "10000"], BAD_COUNTS),
        "--tails": (["0", "1", "3"], BAD_COUNTS),
        "--flips": (["1,0,1", "1"], ["1,2", "", "a,b", "1,,0", "nan"]),
        "--prior-a": (["1", "0.5", "3"], BAD_NUMBERS),
        "--prior-b": (["1", "2"], BAD_NUMBERS),
        "--simulate": (["0.5", "1", "0"], ["-1", "2", "nan"]),
        "--n": (["1", "5", "10000"], ["0", "-1", "x"]),
        "--guide": (["beta", "map", "mle"], ["bogus"]),
        "--data": ([], ["/nonexistent/flips.csv"]),
    },
    "linreg": {
        "--simulate": (["2", "50"], ["0", "1", "-1", "x"]),
        "--dim": (["1", "3"], ["0", "-1"]),
        "--prior-loc": (["0", "1.5"], BAD_NUMBERS),
        "--prior-scale": (["1", "0.1"], BAD_NUMBERS),
        "--noise-scale": (["1", "3"], BAD_NUMBERS),
        "--test-fraction": (["0", "0.5", "0.99"], ["1", "-0.1", "nan"]),
        "--y-col": ([], ["y", "nope", "0"]),
        "--guide": (["full-covariance", "mean-field"], ["bogus"]),
        "--data": (["diabetes"], ["/nonexistent/data.npz"]),
    },
    "user": {
        "--x-cols": ([], ["x", "nope", "", "0,1"]),
        "--y-col": ([], ["y", "nope"]),
        "--arg": ([], ["x=1", "bogus", "=", "w=nan", "y=[1,2]"]),
        "--init": (["feasible", "mean", "median", "sample"], ["nope"]),
        "--init-value": (["w=1"], ["w=nan", "nosite=1", "bad"]),
        "--guide": (
            ["auto-normal", "auto-delta", "auto-laplace", "auto-mvn"],
            ["bogus", "/n.py:g"],
        ),
        "--data": ([], ["/nonexistent/data.npz"]),
    },
}
FLAGS = ["--validate", "--no-vectorize-particles", "--resume", "--overwrite", "--quiet"]
ODD = ["--bogus", "-x", "--lr=0.1", "--steps", "--help", "extra"]


# ----------------------------------------------------------------------------- the sandbox


class Sandbox:
    """A folder per example: ``run/`` (the only place a command may write), ``data/`` (its
    input files, never changed), ``sentinel/`` (never touched) and ``cwd/`` (the working
    directory, left empty)."""

    def __init__(self, root: Path):
        self.root = root
        self.run, self.data, self.cwd = root / "run", root / "data", root / "cwd"
        for d in (self.data, self.cwd, root / "sentinel"):
            d.mkdir()
        (root / "sentinel" / "keep.txt").write_text("untouched\n")
        self._before: dict[str, bytes] | None = None

    def outside(self) -> dict[str, bytes]:
        """Every path outside ``run/`` and its bytes (folders: b"")."""
        out = {}
        for p in sorted(self.root.rglob("*")):
            if p == self.run or self.run in p.parents:
                continue
            out[str(p.relative_to(self.root))] = p.read_bytes() if p.is_file() else b""
        return out

    def freeze(self) -> None:
        self._before = self.outside()

    def check(self) -> None:
        assert self.outside() == self._before, "a command wrote outside its run folder"


@contextlib.contextmanager
def sandbox() -> Iterator[Sandbox]:
    root = Path(tempfile.mkdtemp(prefix="bayesdl-prop-"))
    old = os.getcwd()
    try:
        box = Sandbox(root)
        os.chdir(box.cwd)
        yield box
    finally:
        os.chdir(old)
        shutil.rmtree(root, ignore_errors=True)


def run(capsys, argv: list) -> int:
    """``bayesdl ARGV`` in this process: status 0 or 2, no traceback, an error line for 2."""
    argv = [str(a) for a in argv]
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's --help only
        assert e.code == 0 and ("--help" in argv or "-h" in argv), (argv, e.code)
        code = 0
    out, err = capsys.readouterr()
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err and "Traceback" not in out, (argv, err)
    event(f"{argv[0]}: exit {code}")
    if code == 2:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert lines and lines[-1].startswith("bayesdl: error: "), (argv, err)
        assert "\n" not in lines[-1]
    return code


@pytest.fixture(scope="module")
def user_spec(tmp_path_factory) -> str:
    """``FILE.py:model`` of a regression, with ``FILE``'s folder holding its data, ``xy.npz``."""
    d = tmp_path_factory.mktemp("user-model")
    (d / "regression.py").write_text(USER_MODEL)
    x = np.linspace(-1.0, 1.0, 10)
    np.savez(d / "xy.npz", x=x, y=2 * x + 0.1)
    return f"{d / 'regression.py'}:model"


def user_data(user_spec: str) -> Path:
    return Path(user_spec.rpartition(":")[0]).parent / "xy.npz"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, user_spec) -> dict[str, Path]:
    """A 20-step run of each model, for ``predict`` with generated inputs."""
    d = tmp_path_factory.mktemp("fitted")
    runs = {}
    for name, argv in {
        "coin": ["coin", "--heads", 3, "--tails", 1],
        "linreg": ["linreg", "--simulate", 20, "--dim", 2],
        "user": [user_spec, "--data", user_data(user_spec)],
    }.items():
        runs[name] = d / name
        argv = ["fit", *argv, "--steps", 20, "--quiet", "--out", runs[name]]
        assert cli.main([str(a) for a in argv]) == 0
    return runs


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------- fit's options


@st.composite
def fit_argv(draw, user_spec: str) -> tuple[list[str], str]:
    """``[MODEL, options...]`` (without --out) and the model's key."""
    key = draw(st.sampled_from(sorted(MODEL_OPTIONS)))
    table = {**ENGINE, **MODEL_OPTIONS[key]}
    argv = [user_spec if key == "user" else key]
    if key == "user" and draw(st.integers(0, 9)):
        argv += ["--data", str(user_data(user_spec))]
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["option"] * 6 + ["flag", "odd"]))
        if kind == "option":
            flag = draw(st.sampled_from(sorted(table)))
            good, bad = table[flag]
            argv += [flag, draw(st.sampled_from(good if good and draw(st.integers(0, 3)) else bad))]
        else:
            argv.append(draw(st.sampled_from(FLAGS if kind == "flag" else ODD)))
    good = draw(st.integers(0, 4)) > 0
    argv += ["--steps", draw(st.sampled_from(["1", "5", "20"] if good else ["0", "-1", "x"]))]
    return argv, key


@SETTINGS
@given(data=st.data())
def test_fit_with_any_options_exits_0_or_2(capsys, user_spec, data):
    argv, _ = data.draw(fit_argv(user_spec))
    with_out = data.draw(st.booleans().map(lambda b: b or "--help" in argv))
    with sandbox() as box:
        box.freeze()
        out = ["--out", box.run] if with_out else []
        code = run(capsys, ["fit", *argv, *out, "--quiet"])
        if not with_out:  # the default run folder, runs/MODEL-TIMESTAMP in the working dir
            made = list((box.cwd / "runs").glob("*")) if (box.cwd / "runs").exists() else []
            assert len(made) <= 1, made
            if made:
                shutil.move(str(made[0]), box.run)
                (box.cwd / "runs").rmdir()
        box.check()
        if code == 0 and box.run.exists():
            assert (box.run / "summary.json").exists()


# -------------------------------------------------------------------------- data files

DTYPES = [
    np.float64,
    np.float32,
    np.int64,
    np.int8,
    np.uint8,
    np.uint64,
    np.complex128,
    np.bool_,
    np.dtype("U3"),
]
CELLS = ["1", "0", "2.5", "-1", "nan", "inf", "-inf", "abc", "", "1e400", "99999999999999999999"]
CELLS += ["true", "false", "1+2j", " 3 ", '"4"']


@st.composite
def arrays(draw) -> np.ndarray:
    dtype = draw(st.sampled_from([*DTYPES, object]))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    if dtype is object:
        return np.array([1, "a", None, 2.5][: draw(st.integers(0, 4))] or [None], dtype=object)
    dtype = np.dtype(dtype)
    if dtype.kind in "fc":
        elements = st.floats(allow_nan=True, allow_infinity=True, width=32)
        if dtype.kind == "c":
            elements = st.complex_numbers(allow_nan=True, allow_infinity=True, width=64)
        return draw(hnp.arrays(dtype, shape, elements=elements))
    return draw(hnp.arrays(dtype, shape))


@st.composite
def data_file(draw) -> tuple[str, bytes | dict]:
    """(file name, its contents: bytes, or a dict of arrays for ``np.savez``)."""
    kind = draw(st.sampled_from(["npz", "csv", "npy", "empty", "garbage", "table", "xy", "xy"]))
    if kind == "xy":  # the arrays a model asks for, of consistent shapes and mixed dtypes
        n, d = draw(st.integers(0, 8)), draw(st.integers(1, 3))
        binary = draw(st.booleans())  # 0/1 values: coin flips
        shapes = {"x": draw(st.sampled_from([(n,), (n, d)])), "y": (n,), "flips": (n,)}
        out = {}
        for name in draw(st.sets(st.sampled_from(sorted(shapes)), min_size=1)):
            dtype = np.dtype(draw(st.sampled_from([np.float64, np.float32, np.int64, np.bool_])))
            if binary or dtype.kind == "b":
                elements = st.integers(0, 1)
            elif dtype.kind == "i":
                elements = st.integers(-(2**40), 2**40)
            else:
                elements = st.floats(-1e6, 1e6, width=32)
            out[name] = draw(hnp.arrays(dtype, shapes[name], elements=elements))
        return "data.npz", out
    if kind == "table":  # a well-formed table, header or not
        cells = st.sampled_from(["0", "1"]) if draw(st.booleans()) else st.sampled_from(CELLS[:4])
        width = draw(st.integers(1, 3))
        lines = [",".join(["x", "y", "a"][:width])] if draw(st.booleans()) else []
        for _ in range(draw(st.integers(1, 8))):
            lines.append(",".join(draw(cells) for _ in range(width)))
        return "data.csv", ("\n".join(lines) + "\n").encode()
    if kind == "npz":
        names = draw(
            st.lists(
                st.sampled_from(["x", "y", "flips", "counts", "table", "x_test", "z"]),
                max_size=3,
                unique=True,
            )
        )
        return "data.npz", {n: draw(arrays()) for n in names}
    if kind == "npy":
        return "data.npy", {"": draw(arrays())}
    if kind == "csv":
        lines = []
        if draw(st.booleans()):  # a header, names possibly repeated
            names = draw(st.lists(st.sampled_from(["x", "y", "a", "", "flips"]), max_size=4))
            lines.append(",".join(names))
        width = draw(st.integers(1, 4))
        for _ in range(draw(st.integers(0, 6))):
            ragged = draw(st.integers(0, 5)) if draw(st.integers(0, 4)) == 0 else width
            lines.append(",".join(draw(st.sampled_from(CELLS)) for _ in range(ragged)))
        return "data.csv", ("\n".join(lines) + ("\n" if draw(st.booleans()) else "")).encode()
    suffix = draw(st.sampled_from([".csv", ".npz", ".npy", ".txt"]))
    if kind == "empty":
        return "data" + suffix, b""
    return "data" + suffix, draw(st.binary(min_size=1, max_size=64))


def write(folder: Path, name: str, content: bytes | dict) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif name.endswith(".npy"):
        np.save(path, content[""], allow_pickle=True)
    else:
        with open(path, "wb") as f:  # np.savez adds no suffix to an open file
            np.savez(f, **content)
    return path


@SETTINGS
@given(data=st.data())
def test_any_data_file_through_fit_evaluate_predict(capsys, user_spec, fitted, data):
    name, content = data.draw(data_file())
    key = data.draw(st.sampled_from(["coin", "linreg", "user"]))
    steps = data.draw(st.integers(1, 20))
    model = user_spec if key == "user" else key
    with sandbox() as box:
        path = write(box.data, name, content)
        box.freeze()
        code = run(capsys, ["fit", model, "--data", path, "--steps", steps, "--quiet", "--out",
                            box.run])  # fmt: skip
        box.check()
        if code == 0:
            run(capsys, ["evaluate", box.run])
            box.check()
            run(capsys, ["predict", box.run, "--input", path])
            box.check()
        # the file as new inputs of a fitted run, which predict leaves as it was
        before = {p.name: p.read_bytes() for p in fitted[key].iterdir() if p.is_file()}
        run(
            capsys,
            ["predict", fitted[key], "--input", path, "--seed", data.draw(st.integers(0, 9))],
        )
        box.check()
        after = {p.name: p.read_bytes() for p in fitted[key].iterdir() if p.is_file()}
        assert after == before


# ------------------------------------------------------------------- evaluate and predict


@SETTINGS
@given(data=st.data())
def test_evaluate_predict_sample_with_any_options(capsys, fitted, data):
    key = data.draw(st.sampled_from(sorted(fitted)))
    command = data.draw(st.sampled_from(["evaluate", "predict", "sample"]))
    good = [["--seed", "3"], ["--seed", "4294967295"], ["--device", "cpu"]]
    good += {"evaluate": [["--samples", "5"], ["--iw-samples", "2"]]}.get(command, [])
    bad = [["--seed", "-1"], ["--seed", "4294967296"], ["--seed", "x"], ["--device", "tpu"]]
    bad += [["--samples", "0"], ["--samples", "-3"], ["--iw-samples", "0"], ["--bogus"]]
    bad += [["--plugin", "/nonexistent.py"], ["--input", "/nonexistent.npz"]]
    bad += [["--output", "/nonexistent/out.json"], ["--input", "/etc"], ["--output", "/"]]
    extra = []
    for _ in range(data.draw(st.integers(0, 2))):
        extra += data.draw(st.sampled_from(good if data.draw(st.integers(0, 3)) else bad))
    with sandbox() as box:
        np.savez(box.data / "in.npz", x=np.ones((3, 2)), flips=np.array([1, 0, 1]))
        (box.run).mkdir()
        if command == "predict" and "--input" not in extra:
            extra += ["--input", box.data / "in.npz"]
        if command == "sample":
            extra += ["--out", box.run]
        if command == "predict" and data.draw(st.booleans()):
            extra += ["--output", box.run / "predictions.json"]
        box.freeze()
        before = {p.name: p.read_bytes() for p in fitted[key].iterdir() if p.is_file()}
        run(capsys, [command, fitted[key], *extra])
        box.check()
        after = {p.name: p.read_bytes() for p in fitted[key].iterdir() if p.is_file()}
        if command != "evaluate":  # evaluate writes evaluation.json, nothing else
            assert after == before
        else:
            assert {k for k in after if after[k] != before.get(k)} <= {"evaluation.json"}
