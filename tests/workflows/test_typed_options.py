"""Options are typed objects end to end (issue 20): a model receives a frozen instance of its own
options dataclass, Python keywords and command-line flags build the same objects, a run's
``config.json`` is those objects' fields, and runs made before the change still load, evaluate
and resume."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

import bayesdl
import bayesdl.workflows  # noqa: F401  (registers the built-in models)
from bayesdl.fits.folder import json_text
from bayesdl.fits.records import read_config
from bayesdl.fits.run import evaluate_run, fit_run
from bayesdl.inference.errors import UserError
from bayesdl.inference.train import FitConfig
from bayesdl.workflows.base import start
from bayesdl.workflows.fit_options import FitOptions, from_argv, from_keywords, from_record
from bayesdl.workflows.registry import REGISTRY
from bayesdl.workflows.user_classes import python_workflow

OLD = Path(__file__).parent / "old_runs"
EXPECTED = json.loads((OLD / "expected_evaluation.json").read_text())


def _mixture():
    """The fixture's model, defined in a script's ``__main__`` as it was (a ``python:`` run)."""
    script = {"__name__": "__main__"}
    exec(compile((OLD / "mixture_model.py").read_text(), "mixture_model.py", "exec"), script)
    return script["mixture"]


def _flat(d, key=""):
    if isinstance(d, dict):
        return {k: v for name, x in d.items() for k, v in _flat(x, f"{key}.{name}").items()}
    if isinstance(d, list):
        return {k: v for i, x in enumerate(d) for k, v in _flat(x, f"{key}[{i}]").items()}
    return {key: d}


def _same_evaluation(got: dict, want: dict) -> None:
    """``got`` (as evaluation.json holds it) equals the old version's numbers, to float32."""
    got, want = _flat(json.loads(json_text(got))), _flat(want)
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == (v if v is None else pytest.approx(v, rel=1e-5, abs=1e-7)), k


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_model_receives_a_frozen_instance_of_its_own_options(name):
    w = REGISTRY[name]
    workflow = w(from_keywords(w))
    assert isinstance(workflow.model_options, w.options)
    assert isinstance(workflow.engine, FitConfig)
    assert (workflow.settings.sampler is not None) == w.nuts
    first = dataclasses.fields(w.options)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(workflow.model_options, first, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        workflow.engine.steps = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        workflow.settings.guide = "other"


#: (model, Python keywords, the same options as flags)
CASES = [
    ("coin", {"heads": 6, "tails": 4}, ["--heads", "6", "--tails", "4"]),
    ("coin", {"flips": "1,0,1", "prior_a": 2}, ["--flips", "1,0,1", "--prior-a", "2"]),
    ("coin", {"heads": None, "steps": "auto"}, ["--steps", "auto"]),
    ("coin", {"batch_size": 0, "compile": True}, ["--batch-size", "0", "--compile"]),
    ("coin", {"vectorize_particles": False}, ["--no-vectorize-particles"]),
    ("coin", {"check_args": True, "lr": "0.5"}, ["--validate", "--lr", "0.5"]),
    ("coin", {"method": "nuts", "num_samples": 50}, ["--inference", "nuts", "--samples", "50"]),
    ("linreg", {"steps": 7.0, "seed": 3}, ["--steps", "7", "--seed", "3"]),
    ("bnn", {"arch": "lenet5", "local_reparam": False}, ["--arch", "lenet5", "--no-local-reparam"]),
    ("bnn", {"prior_scale": None, "hidden": "32"}, ["--hidden", "32"]),
    ("vae", {"latent_dim": 3, "guide": "amortized"}, ["--latent-dim", "3"]),
    ("ss-vae", {"labels_per_class": 5, "estimator": "enum"}, ["--labels-per-class", "5"]),
    ("stochastic-depth", {"compile": "auto"}, ["--compile", "auto"]),
]


@pytest.mark.parametrize("name, keywords, argv", CASES)
def test_keywords_build_the_options_the_flags_do(name, keywords, argv):
    w = REGISTRY[name]
    got, want = from_keywords(w, **keywords), from_argv(w, argv)
    assert got == want
    assert isinstance(got, FitOptions) and isinstance(got.model, w.options)


def test_lists_are_tuples_from_keywords_and_from_flags(tmp_path):
    w = python_workflow(lambda x: None, {})
    got = from_keywords(w, arg=["a=1", "b=2"], init_value=("w=0",), plugin=[tmp_path / "p.py"])
    want = from_argv(w, ["--arg", "a=1", "--arg", "b=2", "--init-value", "w=0", "--plugin", "p.py"])
    assert got.model.arg == ("a=1", "b=2") == want.model.arg
    assert got.model.init_value == ("w=0",) and got.plugin == (str(tmp_path / "p.py"),)
    assert got.record()["arg"] == ["a=1", "b=2"]  # config.json holds lists


@pytest.mark.parametrize(
    "keywords, argv, message",
    [
        ({"steps": 2.5}, ["--steps", "2.5"], "steps"),
        ({"heads": "six"}, ["--heads", "six"], "heads"),
        ({"estimator": "nope"}, ["--estimator", "nope"], "estimator"),
        ({"compile": "sometimes"}, ["--compile", "sometimes"], "compile"),
        ({"seed": -1}, ["--seed", "-1"], "seed"),
    ],
)
def test_bad_values_are_refused_from_keywords_and_from_flags(keywords, argv, message):
    with pytest.raises(UserError, match=message) as by_keyword:
        from_keywords(REGISTRY["coin"], **keywords)
    with pytest.raises(UserError, match=message):
        from_argv(REGISTRY["coin"], argv)
    assert "model 'coin'" in str(by_keyword.value)  # the keyword's message names option and flag
    with pytest.raises(UserError, match=message):  # the public call says the same
        bayesdl.fit("coin", progress=False, **keywords)


def test_config_json_is_the_fields_of_the_options_objects(tmp_path):
    run = fit_run(
        REGISTRY["coin"], from_keywords(REGISTRY["coin"], heads=3, steps=20), tmp_path / "r"
    )
    args = read_config(tmp_path / "r")["args"]
    s = run.workflow.settings
    want = {f.name: getattr(s.model, f.name) for f in dataclasses.fields(s.model)}
    for part in (s.engine, s.sampler):
        want |= {
            f.name: getattr(part, f.name)
            for f in dataclasses.fields(part)
            if not f.metadata.get("internal")  # the live optimizer class: not an option
        }
    want = {k: list(v) if isinstance(v, tuple) else v for k, v in want.items()}
    want |= {"guide": s.guide, "plugin": []}
    want["max_plate_nesting"] = "inf"  # JSON has no infinity
    assert args == want
    assert from_record(REGISTRY["coin"], args) == s  # and reading it back gives the object


def test_derived_values_are_recorded_from_the_object_the_run_used(tmp_path):
    """bnn's default prior scale and a @config_enumerate model's estimator are decided once,
    before the run, and the run records that object (its build changes nothing)."""
    bnn = start(REGISTRY["bnn"], from_keywords(REGISTRY["bnn"], guide="map"))
    assert bnn.model_options.prior_scale == 30.0
    mixture = python_workflow(_mixture(), {"y": torch.randn(8)})
    given = from_keywords(mixture, guide="auto-normal")
    w = start(mixture, given)
    assert given.engine.estimator == "reparam" and w.engine.estimator == "enum"
    before = w.settings
    w.build()
    assert w.settings is before and w.recorded_args()["estimator"] == "enum"


def _copy(tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    shutil.copytree(OLD / name, out)
    return out


def test_an_old_coin_run_loads_evaluates_and_resumes(tmp_path):
    run = _copy(tmp_path, "coin")
    _same_evaluation(evaluate_run(run, REGISTRY, seed=0), EXPECTED["coin"])
    args = read_config(run)["args"]
    options = from_record(REGISTRY["coin"], {**args, "steps": 300})
    resumed = fit_run(REGISTRY["coin"], options, run, resume=True)
    assert resumed.result.steps == 300 and read_config(run)["args"]["steps"] == 300


def test_an_old_run_lacking_options_takes_their_defaults(tmp_path):
    run = _copy(tmp_path, "coin")
    cfg = json.loads((run / "config.json").read_text())
    del cfg["args"]["lr_warmup"], cfg["args"]["dense_mass"]  # options an older run lacks
    (run / "config.json").write_text(json.dumps(cfg))
    post = bayesdl.load(run)
    assert post._run.workflow.engine.lr_warmup == 0
    assert post._run.workflow.settings.sampler.dense_mass is False
    _same_evaluation(evaluate_run(run, REGISTRY, seed=0), EXPECTED["coin"])


def test_an_old_python_run_with_a_derived_estimator_loads_evaluates_and_resumes(tmp_path):
    import numpy as np

    run, model = _copy(tmp_path, "mixture"), _mixture()
    post = bayesdl.load(run, model=model)
    assert post._run.workflow.engine.estimator == "enum"
    registry = {"python:mixture": python_workflow(model, None)}
    _same_evaluation(evaluate_run(run, registry, seed=0), EXPECTED["mixture"])
    y = torch.as_tensor(np.load(run / "data.npz")["y"])
    again = bayesdl.fit(
        model,
        data={"y": y},
        guide="auto-normal",
        steps=150,
        log_every=25,
        checkpoint_every=50,
        out=run,
        resume=True,
        progress=False,
    )
    assert again._run.result.steps == 150 and again._run.workflow.engine.estimator == "enum"


def test_a_plugin_options_class_that_is_not_frozen_still_works():
    @dataclasses.dataclass
    class Loose:
        knob: int = dataclasses.field(default=1, metadata={"help": "a knob"})

    class Plugin(bayesdl.workflows.base.Workflow):
        name, default_guide, options = "loose", "g", Loose

    assert from_keywords(Plugin, knob=3).model == Loose(3)
    assert from_keywords(Plugin).engine == FitConfig()
    assert from_keywords(Plugin).sampler is None
