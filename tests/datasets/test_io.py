"""Reading user data files: strict (each bad file is one clear line), fast (pandas' C reader)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bayesdl.datasets.io import load_arrays, load_columns
from bayesdl.inference.errors import UserError
from bayesdl.workflows.user_model import _tensor, read_data

ROOT = Path(__file__).resolve().parents[2]


def refused(path, *args, match: str, reader=read_data, **kwargs) -> str:
    """``reader(path, ...)`` raises a one-line UserError that matches ``match``."""
    with pytest.raises(UserError, match=match) as e:
        reader(path, *args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def csv(tmp_path: Path, text: str, name: str = "d.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# -- bad files, one test each


def test_npz_x_and_y_of_different_lengths(tmp_path):
    p = tmp_path / "xy.npz"
    np.savez(p, x=np.ones((10, 2)), y=np.ones(50))
    msg = refused(p, match="same number of rows")
    assert "(10, 2)" in msg and "(50,)" in msg
    np.savez(p, x=np.ones((10, 2)), y=np.ones(10), x_test=np.ones((3, 2)), y_test=np.ones(4))
    assert "(3, 2)" in refused(p, match="x_test .* y_test")


def test_csv_duplicate_column_names(tmp_path):
    p = csv(tmp_path, "a,b,a\n1,2,3\n4,5,6\n")
    assert "'a'" in refused(p, match="appears twice")
    assert "'a'" in refused(p, match="appears twice", reader=load_arrays)


def test_complex_arrays(tmp_path):
    p = tmp_path / "c.npz"
    np.savez(p, z=np.array([1 + 2j, 3 - 1j]))
    assert "'z'" in refused(p, match="complex")


def test_integers_beyond_int64(tmp_path):
    p = tmp_path / "u.npz"
    np.savez(p, n=np.array([1, 2**63 + 5], dtype=np.uint64))
    assert "'n'" in refused(p, match="beyond the int64 range")
    for big in (2**63, 2**64 - 1, 10**20, -(2**63) - 1):
        c = csv(tmp_path, f"k,v\n{big},1\n2,3\n")
        assert "'k'" in refused(c, match="beyond the int64 range")
    np.savez(p, n=np.array([1, 2**62], dtype=np.uint64))  # fits: int64, not wrapped
    assert read_data(p)["n"].tolist() == [1, 2**62]


def test_object_and_text_data(tmp_path):
    p = tmp_path / "o.npz"
    np.savez(p, ok=np.ones(2), things=np.array([{}, 1], dtype=object))
    assert "'things'" in refused(p, match="Python objects")
    np.savez(p, names=np.array(["a", "b"]))
    assert "'names'" in refused(p, match="not numeric")
    c = csv(tmp_path, "a,b\n1,2\n3,oops\n")
    assert "'b'" in refused(c, match="not numeric .*'oops'")


@pytest.mark.parametrize(
    "text, match",
    [
        ("a,b\n1,2\n3\n4,5\n", "line 3 has 1 field, the header names 2 columns"),
        ("a,b\n1,2\n3,4,5\n4,5\n", "line 3 has 3 fields, the header names 2 columns"),
        ("a,b\n1,2,3\n4,5,6\n", "line 2 has 3 fields, the header names 2 columns"),
        ("1,2\n3\n", "line 2 has 1 field, line 1 has 2"),
        ("", "is empty"),
        ("\n  \n\n", "is empty"),
        ("a,b\n", "has a header but no rows"),
        ("a,b\n1,nan\n", "column 'b', holds a NaN"),
        ("a,b\n1,2\n3,-inf\n", "column 'b', holds a NaN or infinite value .*index \\[1\\]"),
        ("a,b\n1,\n3,4\n", "column 'b', holds a NaN"),
        ("a,b\ntrue,1\n1,2\n", "column 'a' is not numeric"),
    ],
    ids=["short", "long", "wide", "short-noheader", "empty", "blank", "header-only", "nan",
         "inf", "hole", "bool-and-number"],
)  # fmt: skip
def test_malformed_tables(tmp_path, text, match):
    p = csv(tmp_path, text)
    refused(p, None, "b", match=match)
    refused(p, match=match, reader=load_arrays)


def test_cli_refuses_a_duplicate_column_with_one_line(tmp_path):
    (tmp_path / "m.py").write_text(
        "import pyro\nimport pyro.distributions as dist\n\n\n"
        "def model(a, b):\n    pyro.sample('m', dist.Normal(0.0, 1.0))\n"
    )
    data = csv(tmp_path, "a,b,b\n1,2,3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bayesdl", "fit", f"{tmp_path / 'm.py'}:model"]
        + ["--data", str(data), "--steps", "5", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "column 'b' appears twice" in proc.stderr and str(data) in proc.stderr


# -- what good files give


def test_csv_columns_keep_their_kind_like_npz(tmp_path):
    p = csv(tmp_path, "group,y,half,flag\n0,1.5,1.0,true\n2,2.5,3.0,false\n1,-1,2.0,TRUE\n")
    d = read_data(p)
    assert d["group"].dtype == torch.int64 and d["group"].tolist() == [0, 2, 1]
    assert d["y"].dtype == torch.get_default_dtype() == torch.float32
    assert d["half"].dtype == torch.float32  # "1.0" is a float, whatever its value
    assert d["flag"].dtype == torch.bool and d["flag"].tolist() == [True, False, True]
    mu = torch.tensor([10.0, 20.0, 30.0])
    assert mu[d["group"]].tolist() == [10.0, 30.0, 20.0]
    np.savez(tmp_path / "same.npz", group=np.array([0, 2, 1]), y=np.array([1.5, 2.5, -1.0]))
    n = read_data(tmp_path / "same.npz")
    assert {k: v.dtype for k, v in n.items()} == {"group": torch.int64, "y": torch.float32}
    xy = read_data(p, "half,group", "group")  # y keeps its kind, x is a float matrix
    assert xy["y"].dtype == torch.int64 and xy["x"].dtype == torch.float32
    assert xy["x"].tolist() == [[1.0, 0.0], [3.0, 2.0], [2.0, 1.0]]
    names, cols = load_columns(p, np.float64)
    assert names == ["group", "y", "half", "flag"]
    assert [c.dtype for c in cols] == [np.int64, np.float64, np.float64, np.bool_]


def test_load_arrays_tables_as_before(tmp_path):
    a = load_arrays(csv(tmp_path, "x,y\n1.5,2\n3,4\n"))
    assert list(a) == ["table", "x", "y"] and a["table"].dtype == np.float64
    assert a["table"].tolist() == [[1.5, 2.0], [3.0, 4.0]] and a["y"].dtype == np.int64
    assert np.shares_memory(a["x"], a["table"])  # no second copy of same-dtype columns
    flips = load_arrays(csv(tmp_path, "1\n0\n\n1\n", "flips.txt"))  # no header: table only
    assert list(flips) == ["table"] and flips["table"].tolist() == [[1], [0], [1]]
    tsv = load_arrays(csv(tmp_path, "a\tb\n1\t2\n", "t.tsv"))
    assert tsv["b"].tolist() == [2]
    np.save(tmp_path / "t.npy", np.arange(6.0).reshape(3, 2))
    d = read_data(tmp_path / "t.npy", "0", "1")
    assert d["x"].shape == (3, 1) and d["y"].tolist() == [1.0, 3.0, 5.0]
    np.save(tmp_path / "v.npy", np.arange(6.0))
    refused(tmp_path / "v.npy", "0", "1", match="must be 2-D")
    assert read_data(csv(tmp_path, "1,2\n3,4\n"), "0", "-1")["y"].tolist() == [2, 4]


def test_tensors_share_memory_when_the_dtype_matches():
    a = np.arange(6, dtype=np.float32)
    assert _tensor(a).data_ptr() == a.ctypes.data
    i = np.arange(6, dtype=np.int64)
    assert _tensor(i).data_ptr() == i.ctypes.data
    big_endian = np.arange(3, dtype=">f8")
    assert _tensor(big_endian).tolist() == [0.0, 1.0, 2.0]
    frozen = np.arange(3, dtype=np.float32)
    frozen.flags.writeable = False
    assert _tensor(frozen).tolist() == [0.0, 1.0, 2.0]  # copied, no warning


def test_a_moderately_big_csv_takes_the_fast_path(tmp_path, monkeypatch):
    rows = 200_000
    rng = np.random.default_rng(0)
    p = tmp_path / "m.csv"
    frame = pd.DataFrame(rng.normal(size=(rows, 4)).round(5), columns=["a", "b", "c", "y"])
    frame["g"] = rng.integers(0, 7, size=rows)
    frame.to_csv(p, index=False)
    calls = []
    real = pd.read_csv

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(pd, "read_csv", spy)
    d = read_data(p)
    assert [c.get("engine") for c in calls] == ["c"] and calls[0].get("chunksize")
    assert d["a"].dtype == torch.float32 and d["g"].dtype == torch.int64
    assert d["a"].shape == (rows,) and d["a"].is_contiguous()
    np.testing.assert_allclose(d["y"].numpy(), frame["y"].to_numpy(), rtol=1e-6)


@pytest.mark.slow
def test_big_csv_fit_time_and_memory():
    """2,000,000 x 10 CSV: `bayesdl fit ... --steps 200` under 20 s and 0.9 GB peak RSS."""
    spec = importlib.util.spec_from_file_location("big_csv", ROOT / "benchmarks" / "big_csv.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.run(rows=2_000_000, features=9, steps=200)
    assert r["dtypes"] == {"y": "torch.float32", "x": "torch.float32"}
    assert r["read_s"] < 5, r
    assert r["fit_peak_rss_mb"] < 900, r
    assert r["fit_wall_s"] < 20, r


SILENT = {  # each used to be read silently wrong; the CLI must refuse it in one line
    "npz x and y of different lengths": (
        "npz",
        {"x": np.ones(10, np.float32), "y": np.ones(50, np.float32)},
    ),
    "complex values": ("npz", {"x": np.ones(4, np.complex64), "y": np.ones(4, np.float32)}),
    "uint64 beyond int64": (
        "npz",
        {"x": np.array([2**63 + 5], np.uint64), "y": np.ones(1, np.float32)},
    ),
    "duplicate CSV column": ("csv", "x,y,y\n1,2,3\n4,5,6\n"),
}


@pytest.mark.parametrize("case", sorted(SILENT))
def test_every_silent_bad_data_case_exits_2_with_one_line(tmp_path, case, capsys):
    from bayesdl.cli import main

    (tmp_path / "m.py").write_text(
        "import pyro\nimport pyro.distributions as dist\n\n\n"
        "def model(x, y=None):\n    pyro.sample('m', dist.Normal(0.0, 1.0))\n"
    )
    kind, content = SILENT[case]
    if kind == "npz":
        data = tmp_path / "d.npz"
        np.savez(data, **content)
    else:
        data = csv(tmp_path, content)
    argv = ["fit", f"{tmp_path / 'm.py'}:model", "--data", str(data), "--steps", "5"]
    assert main([*argv, "--quiet", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bayesdl: error:"), err
    assert not (tmp_path / "run").exists()
