"""Issue 22, items 1 and 2: a run folder runs no code because it names it, and bayesdl writes
nothing outside the folders it is pointed at (never through a link, never replacing a file
without ``--overwrite``, never into a run folder a fit holds). Each reproducer of the issue's
audit is a test here; they all exited 0 (or hung) before. Reading: ``test_safe_reading.py``."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
from folder_kit import (
    copy,
    edit_config,
    fifo,
    link,
    main,
    name_model_file,
    plant,
    real,
    real_refused,
    refused,
)

import bayesdl
from bayesdl.workflows import trust


@pytest.fixture
def t(run_templates) -> dict[str, Path]:
    """The template runs (``conftest.run_templates``)."""
    return run_templates


def gamma_poisson(counts):
    """rate ~ Gamma(5, 0.5), counts_n ~ Poisson(rate)."""
    rate = pyro.sample("rate", dist.Gamma(5.0, 0.5))
    with pyro.plate("data", len(counts)):
        pyro.sample("obs", dist.Poisson(rate), obs=counts)


def victim(tmp_path: Path, content: str = "victim\n") -> Path:
    path = tmp_path / "victim.txt"
    path.write_text(content)
    return path


# ----------------------------------------------------------------------------- code


def _sbnn(t, tmp_path: Path) -> tuple[Path, Path]:
    """A shared bnn run whose config.json names the net.py inside it, by a relative path."""
    run = copy(t["bnn"], tmp_path / "sbnn")
    marker = tmp_path / "marker"
    plant(run / "net.py", marker, (t["root"] / "code" / "net.py").read_text())
    edit_config(run, lambda c: c["args"].update(net="sbnn/net.py:make_net"))
    return run, marker


def test_a_folder_naming_its_own_net_file_runs_no_code(t, tmp_path, capsys, monkeypatch):
    run, marker = _sbnn(t, tmp_path)
    monkeypatch.chdir(tmp_path)
    line = refused(capsys, "evaluate", "sbnn")
    assert "sbnn/net.py" in line and "--model-file" in line
    with pytest.raises(bayesdl.UserError, match="sbnn/net.py"):
        bayesdl.load("sbnn")
    assert not marker.exists()


def test_proc_self_cwd_and_a_recorded_sha256_import_nothing(t, tmp_path, capsys, monkeypatch):
    # the old rule ("absolute paths only", sha256 checked) let this through: the path is
    # absolute and config.json records the planted file's own sha256
    run = copy(t["user"], tmp_path / "shared")
    marker = tmp_path / "marker"
    digest = plant(run / "model.py", marker)
    name_model_file(run, "/proc/self/cwd/shared/model.py", digest)
    monkeypatch.chdir(tmp_path)
    for argv in (
        ["evaluate", "shared"],
        ["predict", "shared", "--input", t["root"] / "data/new.npz"],
    ):
        assert "you have not fitted" in refused(capsys, *argv)
    with pytest.raises(bayesdl.UserError, match="not fitted"):
        bayesdl.load("shared")
    assert not marker.exists()


def test_a_guide_file_inside_the_folder_is_not_imported(t, tmp_path, capsys):
    run = copy(t["user"], tmp_path / "shared")
    marker = tmp_path / "marker"
    plant(run / "guide.py", marker, "\n\ndef guide(counts):\n    pass\n")
    edit_config(run, lambda c: c["args"].update(guide=f"{run / 'guide.py'}:guide"))
    assert "guide file" in refused(capsys, "evaluate", run)
    with pytest.raises(bayesdl.UserError, match="guide file"):
        bayesdl.load(run, model=gamma_poisson)  # the model given again from Python
    assert not marker.exists()


def test_fit_records_the_net_file_resolved_with_its_sha256(t):
    cfg = json.loads((t["bnn"] / "config.json").read_text())
    net = t["root"] / "code" / "net.py"
    assert cfg["args"]["net"] == f"{net.resolve()}:make_net"  # typed as code/net.py:make_net
    assert cfg["net_file"]["sha256"] == trust.sha256(net.read_bytes())
    record = trust.trusted()
    assert cfg["net_file"]["sha256"] in record[str(net.resolve())]


def test_code_named_again_is_imported_even_from_another_place(t, tmp_path, capsys):
    # the receiver of a shared run names its own copy of the model file: same sha256
    run = copy(t["user"], tmp_path / "shared")
    mine = tmp_path / "mine.py"
    mine.write_bytes((t["root"] / "code" / "gp.py").read_bytes())
    name_model_file(run, "/home/someone/else/gp.py", trust.sha256(mine.read_bytes()))
    assert "does not exist here" in refused(capsys, "evaluate", run)
    code, err = main(capsys, "evaluate", run, "--model-file", mine)
    assert code == 0, err
    post = bayesdl.load(run, model_files=[mine])
    assert "rate" in post.sample(10)
    # another file named is no copy of it: still refused
    other = tmp_path / "other.py"
    other.write_text("# not the model\n")
    refused(capsys, "evaluate", run, "--model-file", other)


def test_loading_never_writes_the_record_of_fitted_code(t, tmp_path, capsys):
    record = trust.state_dir() / trust.RECORD
    before = record.read_bytes()
    run = copy(t["user"], tmp_path / "run")
    assert main(capsys, "evaluate", run)[0] == 0
    assert record.read_bytes() == before


# ----------------------------------------------------------------------------- writes


def test_evaluation_json_linked_to_a_victim_is_refused(t, tmp_path, capsys):
    run = copy(t["coin"], tmp_path / "run")
    target = victim(tmp_path)
    link(run / "evaluation.json", target)
    assert "symbolic link" in refused(capsys, "evaluate", run)
    assert target.read_text() == "victim\n" and (run / "evaluation.json").is_symlink()


@pytest.mark.parametrize("name", ["summary.json", "config.json", "checkpoint.pt", "metrics.jsonl"])
def test_resume_through_a_planted_link_is_refused(t, tmp_path, capsys, name):
    run = copy(t["coin"], tmp_path / "run")
    target = victim(tmp_path, (run / name).read_bytes().decode("latin-1"))
    before = target.read_bytes()
    link(run / name, target)
    line = refused(capsys, "fit", "coin", "--heads", 3, "--tails", 1, "--steps", 30, "--quiet",
                   "--resume", "--out", run)  # fmt: skip
    assert name in line and "symbolic link" in line
    assert target.read_bytes() == before


def test_resume_through_a_prototype_link_is_refused(t, tmp_path, capsys):
    run = copy(t["user"], tmp_path / "run")
    target = tmp_path / "p.npz"
    target.write_bytes((run / "prototype.npz").read_bytes())
    before = target.read_bytes()
    link(run / "prototype.npz", target)
    gp = [f"{t['root'] / 'code' / 'gp.py'}:model", "--data", t["root"] / "data" / "counts.npz"]
    line = refused(capsys, "fit", *gp, "--steps", 30, "--quiet", "--resume", "--out", run)
    assert "prototype.npz" in line and target.read_bytes() == before


def test_a_planted_temporary_checkpoint_link_is_never_written(t, tmp_path, capsys):
    run = copy(t["coin"], tmp_path / "run")
    target = victim(tmp_path)
    link(run / "checkpoint.pt.tmp", target)  # the fixed name bayesdl used to write first
    code, err = main(capsys, "fit", "coin", "--heads", 3, "--tails", 1, "--steps", 30,
                     "--quiet", "--resume", "--out", run)  # fmt: skip
    assert code == 0, err
    assert target.read_text() == "victim\n"
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")]


def test_a_planted_lock_link_creates_nothing(t, tmp_path, capsys):
    run = copy(t["coin"], tmp_path / "run")
    link(run / ".bayesdl.lock", tmp_path / "created")
    refused(capsys, "fit", "coin", "--heads", 3, "--tails", 1, "--steps", 30, "--quiet",
            "--resume", "--out", run)  # fmt: skip
    assert not (tmp_path / "created").exists()


def test_a_figure_link_is_refused_before_the_fit(t, tmp_path, capsys):
    run = copy(t["coin"], tmp_path / "run")
    target = victim(tmp_path)
    link(run / "coin_posterior.png", target)
    line = refused(capsys, "fit", "coin", "--heads", 3, "--tails", 1, "--steps", 30, "--quiet",
                   "--resume", "--out", run)  # fmt: skip
    assert "coin_posterior.png" in line and target.read_text() == "victim\n"


def test_evaluation_json_as_a_fifo_is_refused_without_hanging(t, tmp_path):
    run = copy(t["coin"], tmp_path / "run")
    fifo(run / "evaluation.json")
    assert "pipe" in real_refused("evaluate", run)


def test_the_tour_writes_no_index_through_a_link(tmp_path, capsys):
    site = tmp_path / "site"
    site.mkdir()
    target = victim(tmp_path)
    link(site / "index.html", target)
    for extra in ([], ["--overwrite"]):
        assert "symbolic link" in refused(capsys, "tour", "--only", "coin", "--out", site,
                                          "--quiet", *extra)  # fmt: skip
    assert target.read_text() == "victim\n" and os.listdir(site) == ["index.html"]


def test_the_tour_writes_no_run_into_a_linked_folder(tmp_path, capsys):
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    site.mkdir()
    elsewhere.mkdir()
    link(site / "coin-1-beta", elsewhere)
    refused(capsys, "tour", "--only", "coin", "--out", site, "--quiet", "--overwrite")
    assert os.listdir(elsewhere) == []


# ----------------------------------------------------------------------------- replaced


def test_the_tour_never_replaces_index_html_without_overwrite(tmp_path, capsys):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("mine\n")
    assert "--overwrite" in refused(capsys, "tour", "--only", "coin", "--out", site, "--quiet")
    assert os.listdir(site) == ["index.html"]  # refused before anything was fitted


def test_predict_output_is_replaced_only_with_overwrite(t, tmp_path, capsys):
    out = tmp_path / "p.json"
    out.write_text("mine\n")
    argv = ["predict", t["coin"], "--input", t["root"] / "data" / "flips.npz", "--output", out]
    assert "--overwrite" in refused(capsys, *argv)
    assert out.read_text() == "mine\n"
    assert main(capsys, *argv, "--overwrite")[0] == 0
    assert isinstance(json.loads(out.read_text()), dict)


def test_compare_json_and_figure_are_replaced_only_with_overwrite(t, tmp_path, capsys):
    (tmp_path / "c.json").write_text("mine\n")
    argv = ["compare", t["coin"], t["coin2"], "--out", tmp_path, "--samples", 50]
    assert "--overwrite" in refused(capsys, *argv, "--json", tmp_path / "c.json")
    assert (tmp_path / "c.json").read_text() == "mine\n" and not (tmp_path / "compare.png").exists()
    assert main(capsys, *argv)[0] == 0  # compare.png is new
    before = (tmp_path / "compare.png").read_bytes()
    assert "compare.png" in refused(capsys, *argv)
    assert (tmp_path / "compare.png").read_bytes() == before
    assert main(capsys, *argv, "--json", tmp_path / "c.json", "--overwrite")[0] == 0
    assert json.loads((tmp_path / "c.json").read_text())


def test_output_into_a_run_folder_a_fit_holds_is_refused(t, tmp_path, capsys):
    held = copy(t["coin2"], tmp_path / "held")
    before = (held / "config.json").read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('held', flush=True)\ntime.sleep(600)\n", str(held / ".bayesdl.lock")],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == b"held"  # a fit holds the folder
        argv = ["predict", t["coin"], "--input", t["root"] / "data" / "flips.npz", "--output"]
        assert "another bayesdl process" in refused(capsys, *argv, held / "config.json",
                                                    "--overwrite")  # fmt: skip
        assert "another bayesdl process" in refused(capsys, *argv, held / "new.json")
        assert "another bayesdl process" in refused(capsys, "evaluate", held)
    finally:
        holder.kill()
        holder.wait()
    assert (held / "config.json").read_bytes() == before
    assert not (held / "new.json").exists() and not (held / "evaluation.json").exists()
    with open(held / ".bayesdl.lock") as f:  # released: writing works again
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_the_console_script_refuses_a_planted_link(t, tmp_path):
    run = copy(t["coin"], tmp_path / "run")
    target = victim(tmp_path)
    link(run / "evaluation.json", target)
    exe = Path(sys.executable).with_name("bayesdl")
    p = subprocess.run([str(exe), "evaluate", str(run)], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "symbolic link" in p.stderr
    assert target.read_text() == "victim\n"
    assert real("evaluate", run).returncode == 2  # and python -m bayesdl
