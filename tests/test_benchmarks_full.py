"""Smoke versions of the full-protocol benchmarks (docs/full_protocols.md): each script runs a
few steps end to end on small data, resumes (a finished unit is skipped), and its results feed
``benchmarks/full_protocol_tables.py``. The synthetic modes always run; the real-data ones need
``$BAYESDL_UCI_DIR`` / ``$BAYESDL_MNIST_DIR`` and are skipped without them."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


def _rows(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/split-0.json")}


def test_uci_synthetic_runs_resumes_and_reports_original_units(tmp_path):
    uci = _bench("uci")
    argv = ["--synthetic", "--splits", "1", "--steps", "40", "--eager", "--nuts-warmup", "5"]
    argv += ["--nuts-draws", "5", "--methods", "meanfield,flipout,mc-dropout,nuts"]
    assert uci.main([*argv, "--out", str(tmp_path / "a")]) == 0
    rows = _rows(tmp_path / "a" / "synthetic")
    assert set(rows) == {"meanfield", "flipout", "mc-dropout", "nuts"}
    mf = rows["meanfield"]
    assert len(mf["validation"]) == len(uci.grid("meanfield", [])) == 4
    best = max(mf["validation"], key=lambda r: r["log_likelihood"])
    assert mf["chosen"] == {k: best[k] for k in ("prior_scale", "noise")}
    assert rows["flipout"]["chosen"] == mf["chosen"]  # the same family's validated choice
    assert all(v.get("from") == "meanfield" for v in rows["flipout"]["validation"])
    for r in rows.values():
        assert math.isfinite(r["test_rmse"]) and math.isfinite(r["test_ll"])
        assert r["n_train"] + r["n_test"] == 160
    # a finished split is skipped: the file is not written again
    path = tmp_path / "a" / "synthetic" / "meanfield" / "split-0.json"
    before = path.stat().st_mtime_ns
    assert uci.main([*argv, "--methods", "meanfield", "--out", str(tmp_path / "a")]) == 0
    assert path.stat().st_mtime_ns == before


def test_uci_scores_are_in_the_original_units(tmp_path):
    """The same data with y in other units (10 y + 5): the standardised fits are the same, so
    the RMSE scales by 10 and the log-likelihood drops by log 10 exactly."""
    uci = _bench("uci")
    root = uci.write_synthetic(tmp_path / "d")
    ds = uci.load_set(root, "synthetic")
    sch = uci.schedule(len(ds.splits[0][0]), 30, compile=False)
    train, test = ds.splits[0]
    config = {"prior_scale": 1.0, "noise": "learned"}
    a = uci.fit_once("meanfield", config, uci.standardise(ds.x, ds.y, train, test), sch, 0)
    b = uci.fit_once("meanfield", config, uci.standardise(ds.x, 10 * ds.y + 5, train, test), sch, 0)
    assert b["rmse"] == pytest.approx(10 * a["rmse"], rel=1e-4)
    assert b["log_likelihood"] == pytest.approx(a["log_likelihood"] - math.log(10), abs=1e-4)
    assert b["sigma"] == pytest.approx(10 * a["sigma"], rel=1e-4)


def test_uci_standardises_on_the_training_rows_only():
    uci = _bench("uci")
    x = np.arange(20.0)[:, None] * np.array([[1.0, 0.0]])  # the second feature is constant
    y = np.arange(20.0) ** 2
    train, ev = np.arange(10), np.arange(10, 20)
    s = uci.standardise(x, y, train, ev)
    assert float(s.x_train[:, 0].mean()) == pytest.approx(0, abs=1e-6)
    assert float(s.y_train.std(unbiased=False)) == pytest.approx(1, rel=1e-5)
    assert s.y_mean == pytest.approx(y[:10].mean()) and float(s.x_eval[:, 1].abs().max()) == 0
    fit_rows, val_rows = uci.validation_split(np.arange(100), 3)
    assert len(val_rows) == 20 and not set(fit_rows) & set(val_rows)
    assert sorted([*fit_rows, *val_rows]) == list(range(100))


def test_uci_on_the_real_splits(tmp_path):
    d = os.environ.get("BAYESDL_UCI_DIR")
    if not d:
        pytest.skip("set BAYESDL_UCI_DIR to the UCI folder with the 20 splits")
    uci = _bench("uci")
    argv = ["--data-dir", d, "--sets", "yacht", "--methods", "mc-dropout", "--splits", "1"]
    assert uci.main([*argv, "--steps", "20", "--eager", "--out", str(tmp_path)]) == 0
    row = json.loads((tmp_path / "yacht" / "mc-dropout" / "split-0.json").read_text())
    assert row["n_train"] == 277 and row["n_test"] == 31 and len(row["validation"]) == 6


def test_sparsevd_smoke_on_digits_and_tables(tmp_path):
    svd = _bench("bnn_sparsevd_mnist")
    argv = ["--digits", "--epochs", "2", "--eager", "--samples", "2", "--out", str(tmp_path)]
    assert svd.main(argv) == 0
    row = json.loads((tmp_path / "mlp-sparse-vd-2ep.json").read_text())
    assert row["protocol"] == "shortened" and row["steps"] == 26
    assert [x["weights"] for x in row["per_layer"]] == [64 * 300, 300 * 100, 100 * 10]
    kept = sum(x["kept"] for x in row["per_layer"])
    assert row["compression"] == pytest.approx(sum(x["weights"] for x in row["per_layer"]) / kept)
    assert 0 <= row["error_percent"] <= 100 and row["cpu_s"] > 0
    tables = _bench("full_protocol_tables")
    (tmp_path / "sparsevd").mkdir()
    (tmp_path / "sparsevd" / "x.json").write_text(json.dumps(row))
    text = "\n".join(tables.sparsevd_table(tmp_path))
    assert "| mlp | sparse-vd | 2.0 (shortened) |" in text


def test_sparsevd_on_mnist(tmp_path):
    d = os.environ.get("BAYESDL_MNIST_DIR")
    if not d:
        pytest.skip("set BAYESDL_MNIST_DIR to the MNIST IDX files")
    svd = _bench("bnn_sparsevd_mnist")
    argv = ["--data-dir", d, "--epochs", "0.01", "--eager", "--samples", "1"]
    assert svd.main([*argv, "--out", str(tmp_path)]) == 0
    row = json.loads((tmp_path / "mlp-sparse-vd-0.01ep.json").read_text())
    assert row["steps"] == 6 and row["per_layer"][0]["weights"] == 784 * 300


def test_calibration_smoke(tmp_path):
    cal = _bench("bnn_calibration_mnist")
    argv = ["--synthetic", "--epochs", "1", "--members", "2", "--samples", "3", "--eager"]
    assert cal.main([*argv, "--out", str(tmp_path)]) == 0
    rows = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert set(rows) == set(cal.METHODS)
    for r in rows.values():
        assert 0 <= r["accuracy"] <= 1 and r["nll"] > 0 and 0 <= r["ece"] <= 1
        assert all(0 <= r[f"auroc_entropy_{k}"] <= 1 for k in ("rotated", "inverted", "noise"))
    assert rows["map"]["samples"] == 1 and "auroc_mi_noise" not in rows["map"]
    assert rows["ensemble"]["samples"] == 2 and rows["meanfield"]["samples"] == 3
    # the ensemble's first member is the MAP row's network, fitted once and resumed
    assert rows["ensemble"]["fits"][0]["run"] == "map-seed0"
    assert rows["ensemble"]["fits"][0]["resumed"]


def test_m2_smoke_on_digits(tmp_path):
    m2 = _bench("ss_vae_mnist")
    argv = ["--labels", "100", "--draws", "2", "--epochs", "0.5", "--out", str(tmp_path)]
    assert m2.main([*argv, "--", "--baseline-steps", "50"]) == 0
    table = json.loads((tmp_path / "table.json").read_text())
    assert table[0]["labels"] == 100 and table[0]["draws"] == 2
    rows = [json.loads((tmp_path / "labels-100" / f"draw-{k}.json").read_text()) for k in (0, 1)]
    assert [r["draw"] for r in rows] == [0, 1] and rows[0]["steps"] == 6
    assert rows[0]["converged"] is False  # 6 steps: the engine's test cannot pass
    assert rows[0]["m2_error_percent"] != rows[1]["m2_error_percent"]  # two label draws


def test_the_tour_links_the_full_tables_and_names_real_commands():
    from bayesdl.reports import tour_full_protocols as tour

    (html,) = tour.sections(ROOT)
    assert "full_protocols.md" in html
    doc = (ROOT / tour.DOC).read_text()
    for _, _, _, command in tour.ROWS:
        script = command.split()[1]
        assert (ROOT / script).exists() and script in doc


def test_the_fitting_time_of_a_resumed_run_counts_every_process(tmp_path):
    """A run killed and resumed: its clock restarts, its killed part left no parts.json entry;
    the rows' wall_seconds fall where a process began, and every process's last row counts."""
    loop_seconds = _bench("run_timing").loop_seconds
    rows = [(600, 18.5), (1200, 38.0), (1800, 58.1), (1200, 20.0), (1800, 41.5), (2400, 60.0)]
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "elbo": -1.0, "wall_seconds": w}) + "\n" for s, w in rows)
    )
    seconds, processes = loop_seconds(tmp_path)
    assert processes == 2
    assert seconds == pytest.approx(58.1 + 60.0)
