"""Issue 22, item 3: every file bayesdl reads from a run folder or a user is read bounded and
typed: regular files only (a FIFO or /dev/zero no longer hangs or is read without end), size
and nesting limits, JSON of the types bayesdl writes, checkpoints checked before they reach
Pyro, ``.npz`` members checked against their headers. Each case is one line and status 2 from
the command line and a :class:`bayesdl.UserError` from Python (a traceback, a hang or an
unbounded read before)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from folder_kit import (
    copy,
    edit_checkpoint,
    edit_config,
    fifo,
    link,
    real_refused,
    refused,
)

import bayesdl
from bayesdl.inference import files


@pytest.fixture
def t(run_templates) -> dict[str, Path]:
    """The template runs (``conftest.run_templates``)."""
    return run_templates


def resume(t, run: Path) -> list:
    return ["fit", "coin", "--heads", 3, "--tails", 1, "--steps", 30, "--quiet", "--resume",
            "--out", run]  # fmt: skip


def user_fit(t, data: Path, tmp_path: Path) -> list:
    gp = f"{t['root'] / 'code' / 'gp.py'}:model"
    return ["fit", gp, "--data", data, "--steps", 5, "--quiet", "--out", tmp_path / "out"]


# ----------------------------------------------------------------------------- special files


def test_config_json_as_a_fifo_or_dev_zero_is_one_line(t, tmp_path):
    run = copy(t["coin"], tmp_path / "run")
    fifo(run / "config.json")
    assert "pipe" in real_refused("evaluate", run)  # it hung before
    link(run / "config.json", "/dev/zero")
    assert "symbolic link" in real_refused("evaluate", run)  # read without end before


def test_metrics_as_dev_zero_or_a_fifo_on_resume_is_one_line(t, tmp_path, capsys):
    run = copy(t["coin"], tmp_path / "run")
    link(run / "metrics.jsonl", "/dev/zero")
    assert "metrics.jsonl" in refused(capsys, *resume(t, run))
    fifo(run / "metrics.jsonl")
    assert "pipe" in refused(capsys, *resume(t, run))


def test_a_fifo_as_data_or_input_is_one_line(t, tmp_path, capsys):
    fifo(tmp_path / "data.csv")
    assert "pipe" in refused(capsys, *user_fit(t, tmp_path / "data.csv", tmp_path))
    fifo(tmp_path / "in.npz")
    assert "pipe" in refused(capsys, "predict", t["user"], "--input", tmp_path / "in.npz")
    link(tmp_path / "zero.csv", "/dev/zero")
    assert "device" in refused(capsys, *user_fit(t, tmp_path / "zero.csv", tmp_path))


def test_a_fifo_in_place_of_a_checkpoint_or_summary_is_one_line(t, tmp_path, capsys):
    run = copy(t["coin"], tmp_path / "run")
    fifo(run / "checkpoint.pt")
    assert "pipe" in refused(capsys, "evaluate", run)
    run = copy(t["coin"], tmp_path / "run2")
    fifo(run / "summary.json")
    with pytest.raises(bayesdl.UserError, match="pipe"):
        bayesdl.load(run)


def test_a_symlink_loop_and_a_name_over_255_bytes_are_one_line(t, tmp_path, capsys):
    link(tmp_path / "a.npz", tmp_path / "b.npz")
    link(tmp_path / "b.npz", tmp_path / "a.npz")
    assert "loop" in refused(capsys, *user_fit(t, tmp_path / "a.npz", tmp_path))
    long = "x" * 300
    assert "too long" in refused(capsys, *user_fit(t, tmp_path / f"{long}.npz", tmp_path))
    assert "too long" in refused(capsys, "fit", "coin", "--steps", 5, "--out", tmp_path / long)
    assert "too long" in refused(capsys, "evaluate", tmp_path / long)


def test_a_config_json_past_the_size_limit_is_refused_unread(t, tmp_path, capsys, monkeypatch):
    run = copy(t["coin"], tmp_path / "run")
    monkeypatch.setattr(files, "JSON_LIMIT", 1000)  # config.json is about 850 bytes
    text = (run / "config.json").read_text().rstrip()
    (run / "config.json").write_text(text[:-1] + " " * 2000 + "}")
    assert "more than" in refused(capsys, "evaluate", run)


# ----------------------------------------------------------------------------- JSON types


@pytest.mark.parametrize(
    "key, value, model",
    [
        ("guide", 5, "user"),
        ("data", 5, "user"),
        ("x_cols", 7, "user"),
        ("guide", None, "user"),
        ("arg", [5], "user"),
        ("batch_size", "x", "user"),
        ("heads", [1, 2], "coin"),
        ("method", 5, "coin"),
        ("device", 5, "coin"),
        ("plugin", "notalist", "coin"),
        ("seed", "x", "coin"),
        ("lr", True, "coin"),
        ("max_plate_nesting", "x", "coin"),
        ("model_function", 5, "user"),
    ],
)
def test_a_wrongly_typed_option_in_config_json_is_one_line(t, tmp_path, capsys, key, value, model):
    run = copy(t[model], tmp_path / "run")
    edit_config(run, lambda c: c["args"].update({key: value}))
    line = refused(capsys, "evaluate", run)
    assert "config.json" in line and (key in line or key.replace("_", "-") in line), line
    with pytest.raises(bayesdl.UserError):
        bayesdl.load(run)


def test_a_wrongly_typed_option_is_refused_by_resume_too(t, tmp_path, capsys):
    run = copy(t["coin"], tmp_path / "run")
    edit_config(run, lambda c: c["args"].update(steps="many"))
    assert "--steps" in refused(capsys, *resume(t, run))


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "[]", '{"model": 5, "args": {}}'])
def test_a_config_json_of_another_shape_is_one_line(t, tmp_path, capsys, text):
    run = copy(t["coin"], tmp_path / "run")
    (run / "config.json").write_text(text)
    assert "config.json" in refused(capsys, "evaluate", run)


@pytest.mark.parametrize(
    "run, edit",
    [
        ("nuts", lambda s: []),
        ("nuts", lambda s: {**s, "wall_seconds": "x"}),
        ("nuts", lambda s: {**s, "chain_stats": "x"}),
        ("nuts", lambda s: {**s, "divergences": "x"}),
        ("coin", lambda s: []),
        ("coin", lambda s: {**s, "final_elbo": "x"}),
        ("coin", lambda s: {**s, "steps": "x"}),
    ],
)
def test_a_summary_json_of_other_types_is_a_user_error(t, tmp_path, run, edit):
    run = copy(t[run], tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps(edit(summary)))
    with pytest.raises(bayesdl.UserError, match="summary.json"):
        print(bayesdl.load(run))


# ----------------------------------------------------------------------------- checkpoints


def _params(state: dict) -> dict:
    return state["param_store"]["params"]


@pytest.mark.parametrize(
    "edit, why",
    [
        (lambda s: [v.fill_(float("nan")) for v in _params(s).values()], "NaN"),
        (lambda s: [v.fill_(float("inf")) for v in _params(s).values()], "NaN or infinite"),
        (lambda s: s.update(param_store="x"), "param_store"),
        (lambda s: _params(s).update({k: "x" for k in _params(s)}), "not a real tensor"),
        (lambda s: _params(s).update({k: v + 0j for k, v in _params(s).items()}), "real"),
        (lambda s: s.update(modules="x"), "modules"),
        (lambda s: s.update(history="x"), "history"),
    ],
)
def test_a_checkpoint_of_wrong_contents_is_one_line(t, tmp_path, capsys, edit, why):
    run = copy(t["coin"], tmp_path / "run")
    edit_checkpoint(run, edit)
    assert why in refused(capsys, "evaluate", run)
    with pytest.raises(bayesdl.UserError, match="checkpoint"):
        bayesdl.load(run)


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s["rng"].update(torch=torch.zeros(3, dtype=torch.uint8)),
        lambda s: s["rng"].update(python=["a", "b", "c"]),
        lambda s: s["rng"]["numpy"].update(keys=torch.zeros(3, dtype=torch.int64)),
        lambda s: s.update(step="x"),
        lambda s: s.update(step=-5),
        lambda s: s.update(optimizer="x"),
        lambda s: s.update(window="x"),
        lambda s: s.pop("optimizer"),
    ],
)
def test_a_checkpoint_that_cannot_be_resumed_is_one_line(t, tmp_path, capsys, edit):
    run = copy(t["coin"], tmp_path / "run")
    edit_checkpoint(run, edit)
    assert "checkpoint" in refused(capsys, *resume(t, run))


def test_a_checkpoint_with_compressed_records_is_refused(t, tmp_path, capsys):
    # torch.save stores its records; a deflated one could claim any size (a zip bomb)
    run = copy(t["coin"], tmp_path / "run")
    with zipfile.ZipFile(run / "checkpoint.pt") as z:
        members = [(i, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(run / "checkpoint.pt", "w", zipfile.ZIP_DEFLATED) as z:
        for info, data in members:
            z.writestr(info.filename, data)
    assert "compressed" in refused(capsys, "evaluate", run)


# ----------------------------------------------------------------------------- npz files


def _npz_with_text(path: Path, arrays: dict) -> None:
    np.savez(path, **arrays)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("notes.txt", "hello")


def _huge(path: Path, name: str) -> None:
    """An .npz whose member claims 10**11 float64 numbers and holds 64 bytes."""
    text = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000,), }".ljust(118)
    header = b"\x93NUMPY\x01\x00" + (len(text) + 1).to_bytes(2, "little") + text.encode() + b"\n"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.npy", header + bytes(64))


def test_draws_npz_truncated_or_not_of_arrays_is_one_line(t, tmp_path, capsys):
    run = copy(t["nuts"], tmp_path / "run")
    with np.load(run / "draws.npz") as f:
        arrays = {k: f[k] for k in f.files}
    _npz_with_text(run / "draws.npz", arrays)
    assert "notes.txt" in refused(capsys, "evaluate", run)
    _huge(run / "draws.npz", "rate")
    assert "header" in refused(capsys, "evaluate", run)
    np.savez(run / "draws.npz", **arrays)
    data = (run / "draws.npz").read_bytes()
    (run / "draws.npz").write_bytes(data[: len(data) // 2])
    assert "draws" in refused(capsys, "evaluate", run)
    np.savez(run / "draws.npz", rate=np.full((1, 30), np.nan))
    assert "NaN" in refused(capsys, "evaluate", run)
    np.savez(run / "draws.npz", other=np.ones((1, 30)))  # not the model's site
    new = t["root"] / "data" / "new.npz"
    assert "latent sites" in refused(capsys, "predict", run, "--input", new)


def test_a_data_npz_not_of_arrays_is_one_line(t, tmp_path, capsys):
    _npz_with_text(tmp_path / "d.npz", {"counts": np.array([1, 2, 3])})
    assert "notes.txt" in refused(capsys, *user_fit(t, tmp_path / "d.npz", tmp_path))
    _huge(tmp_path / "d.npz", "counts")
    assert "header" in refused(capsys, *user_fit(t, tmp_path / "d.npz", tmp_path))
    _npz_with_text(tmp_path / "in.npz", {"counts": np.array([1, 2])})
    assert "notes.txt" in refused(capsys, "predict", t["user"], "--input", tmp_path / "in.npz")


def test_a_broken_prototype_npz_is_one_line(t, tmp_path, capsys):
    run = copy(t["user"], tmp_path / "run")
    data = (run / "prototype.npz").read_bytes()
    (run / "prototype.npz").write_bytes(data[: len(data) // 2])
    assert "prototype.npz" in refused(
        capsys, "predict", run, "--input", t["root"] / "data" / "new.npz"
    )


def test_json_nesting_is_bounded_before_parsing():
    with pytest.raises(bayesdl.UserError, match="nests JSON"):
        files.parse_json("[" * 100_000 + "]" * 100_000, "x.json")
    assert files.parse_json('{"a": "[[[[[[[[", "b": [[1]]}', "x.json") == {
        "a": "[[[[[[[[",
        "b": [[1]],
    }
