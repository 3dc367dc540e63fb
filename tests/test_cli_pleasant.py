"""The shell as a newcomer meets it: the help texts, a default run folder, a guide's spelling,
and the README's main command run twice."""

from __future__ import annotations

import json
import re

import pytest

import bayesdl
import bayesdl.cli as cli
from bayesdl.workflows.fit_options import from_keywords
from bayesdl.workflows.registry import REGISTRY


def test_help_says_what_bayesdl_is_and_one_line_per_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("bayesdl: Bayesian deep learning with Pyro")
    for name in cli.COMMANDS:
        assert re.search(rf"^  {re.escape(name)}\b.*\S", out, re.M), name
    assert "dispatches" not in out


def test_fit_help_without_a_model_lists_the_common_options(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["fit", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    flags = "--guide --steps --lr --optimizer --optim-arg --scheduler --batch-size --seed"
    for flag in (*flags.split(), "--device", "--inference", "--out", "--resume"):
        assert flag in out, flag
    assert "bayesdl fit MODEL --help" in " ".join(out.replace("`", "").split())


def test_fit_without_out_writes_a_timestamped_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["fit", "coin", "--steps", "30", "--quiet"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    m = re.match(r"run folder: (runs/coin-\d{8}-\d{6}) ", line)
    assert m, line
    assert (tmp_path / m.group(1) / "summary.json").exists()
    assert cli.main(["fit", "coin", "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err


def test_default_out_names_a_file_model_by_file_and_function(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = cli.default_out("some/dir/my model.py:model")
    assert re.fullmatch(r"runs/my-model-model-\d{8}-\d{6}", str(out))
    out.mkdir(parents=True)
    assert cli.default_out("some/dir/my model.py:model").name.endswith("-2")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_mean_field_guide_takes_every_spelling(name):
    workflow = REGISTRY[name]
    own = [g for g in workflow.guides if g.replace("-", "") == "meanfield"]
    for spelling in ("meanfield", "mean-field", "Mean_Field", "mf"):
        guide = from_keywords(workflow, guide=spelling).guide
        assert guide == (own[0] if own else spelling), (name, spelling)


def test_the_spelling_is_recorded_canonically(tmp_path, capsys):
    out = tmp_path / "lr"
    argv = ["fit", "linreg", "--guide", "meanfield", "--steps", "30", "--quiet", "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["args"]["guide"] == "mean-field"
    post = bayesdl.fit("bnn", guide="mean-field", steps=2, hidden="8", progress=False)
    assert post.fit_info.steps == 2 and post._run.workflow.settings.guide == "meanfield"


def test_the_tour_command_runs_twice_and_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    from bayesdl.reports.tour import MARKER

    argv = ["tour", "--only", "coin", "--out", str(tmp_path / "tour"), "--quiet"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "tour" / MARKER).is_file()
    assert cli.main(argv) == 0, capsys.readouterr().err  # the README's command, again
    assert "replacing" in capsys.readouterr().err
    (tmp_path / "tour" / MARKER).write_text("mine\n")  # not the marker bayesdl writes
    assert cli.main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
