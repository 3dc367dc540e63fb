"""Options are data: every model's flags and defaults come from its ``Options`` dataclass (and
the engine's from ``FitConfig``), and Python keywords go through the same checks as flags."""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from pathlib import Path

import pytest

import bayesdl.workflows  # noqa: F401  (registers the built-in models)
from bayesdl.inference.errors import UserError
from bayesdl.inference.mcmc import MCMCConfig
from bayesdl.inference.train import FitConfig
from bayesdl.workflows.base import Workflow
from bayesdl.workflows.coin import Coin
from bayesdl.workflows.fit_options import from_keywords, from_namespace
from bayesdl.workflows.options import (
    add_options,
    defaults,
    engine_defaults,
    fit_parser,
    flags,
)
from bayesdl.workflows.registry import REGISTRY

BUILT_IN = ["coin", "linreg", "bnn", "vae", "stochastic-depth", "ss-vae"]


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)  # argparse has no public list of its flags


def _sample(cls: type, f: dataclasses.Field) -> tuple[list[str], object]:
    """A non-default value of field ``f``: ``(command-line words, Python value)``."""
    hint = typing.get_type_hints(cls)[f.name]
    if typing.get_origin(hint) in (list, tuple):
        flag = flags(cls)[f.name]
        return [flag, "a=1", flag, "b=2"], ["a=1", "b=2"]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    kind = args[0] if typing.get_origin(hint) is not list and args else hint
    flag = flags(cls)[f.name]
    if f.metadata.get("choices"):
        choice = list(f.metadata["choices"])[-1]
        return [flag, choice], choice
    if kind is bool:
        return [flag], not f.default
    if kind is int:
        return [flag, "3"], 3
    if kind is float:
        return [flag, "0.75"], 0.75
    if kind is str:
        return [flag, "abc"], "abc"
    assert typing.get_origin(hint) is list, hint
    return [flag, "a=1", flag, "b=2"], ["a=1", "b=2"]


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_model_declares_typed_options(name):
    w = REGISTRY[name]
    assert dataclasses.is_dataclass(w.options)
    for f in dataclasses.fields(w.options):
        assert f.metadata.get("help"), f"{name}: option {f.name} has no help"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_parser_flags_and_defaults_are_the_dataclass_fields(name):
    w = REGISTRY[name]
    p = fit_parser(w, f"bayesdl fit {name}")
    expected = {
        **defaults(w.options),
        **engine_defaults(w),
        "guide": w.default_guide,
        "plugin": [],
        **(defaults(MCMCConfig) if w.nuts else {}),  # --inference nuts --samples ...
    }
    got = vars(p.parse_args([]))
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        v = list(v) if isinstance(v, tuple) else v  # argparse appends to a list
        assert got[k] == v or (isinstance(v, float) and math.isinf(v) and math.isinf(got[k])), k
    want = {*flags(w.options).values(), *flags(FitConfig).values()}
    want |= set(flags(MCMCConfig).values()) if w.nuts else set()
    assert _option_strings(p) == want | {"--guide", "--plugin", "-h", "--help"}
    assert w.option_defaults() == defaults(w.options)
    # the per-model engine defaults of today: `fit_defaults` over FitConfig's
    for k, v in w.fit_defaults.items():
        assert got[k] == v


def test_engine_flags_are_the_ones_of_before():
    assert set(flags(FitConfig).values()) == {
        "--steps", "--lr", "--optimizer", "--estimator", "--particles",
        "--no-vectorize-particles", "--max-plate-nesting", "--batch-size", "--lr-schedule",
        "--lr-warmup", "--clip-norm", "--kl-warmup", "--kl-warmup-start", "--seed", "--device",
        "--log-every", "--checkpoint-every", "--threads", "--compile", "--validate",
        "--optim-arg", "--scheduler", "--scheduler-arg",
    }  # fmt: skip
    h = fit_parser(Coin, "bayesdl fit coin").format_help()
    assert "--max-plate-nesting" not in h  # hidden
    assert "optimizer steps (default 2000)" in h  # the model's own default in the help
    assert "variational family: beta, map, mle (default beta)" in h


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_keywords_and_flags_give_the_same_options(name):
    """``defaults() + overrides`` from Python keywords == parsing the equivalent flags."""
    w = REGISTRY[name]
    argv, kwargs = [], {}
    for cls in (w.options, FitConfig):
        for f in dataclasses.fields(cls):
            if f.name in ("max_plate_nesting",) or f.metadata.get("internal"):
                continue
            words, value = _sample(cls, f)
            if cls is FitConfig and f.name == "estimator":
                words, value = ["--estimator", "score"], "score"
            if cls is FitConfig and f.name in ("optimizer", "scheduler"):  # names it knows
                value = {"optimizer": "rmsprop", "scheduler": "StepLR"}[f.name]
                words = [flags(cls)[f.name], value]
            argv += words
            kwargs[f.name] = value
    argv += ["--guide", "g1", "--plugin", "p.py"]
    kwargs.update(guide="g1", plugin=["p.py"])
    parsed = fit_parser(w, "t").parse_args(argv)
    assert from_keywords(w, **kwargs) == from_namespace(w, parsed)
    assert from_keywords(w) == from_namespace(w, fit_parser(w, "t").parse_args([]))


def test_coin_keywords():
    o = from_keywords(Coin, heads=6, tails=4, steps=2000)
    assert (o.model.heads, o.model.tails, o.engine.steps, o.engine.lr) == (6, 4, 2000, 0.1)
    assert o.guide == "beta"
    assert o.engine.estimator == "reparam" and o.model.prior_a == 1.0 and o.plugin == ()
    assert isinstance(from_keywords(Coin, lr=1).engine.lr, float)
    strings = from_keywords(Coin, lr="0.5", steps="7").engine  # strings as on the command line
    assert (strings.lr, strings.steps) == (0.5, 7)
    assert from_keywords(Coin, steps=7.0).engine.steps == 7
    assert from_keywords(Coin, batch_size=0).engine.batch_size is None  # as `--batch-size 0`
    assert from_keywords(Coin, batch_size="full").engine.batch_size is None
    assert from_keywords(Coin, batch_size=16).engine.batch_size == 16
    assert from_keywords(Coin, heads=None).model.heads is None
    both = from_keywords(Coin, vectorize_particles=False, check_args=True).engine
    assert both.check_args is True and both.vectorize_particles is False
    assert from_keywords(Coin, data=Path("flips.csv")).model.data == "flips.csv"
    assert from_keywords(Coin, plugin=[Path("p.py")]).plugin == (str(Path("p.py").resolve()),)


def test_unknown_keyword_lists_the_valid_ones():
    with pytest.raises(UserError, match=r"unknown option 'foo' for model 'coin'; options: ") as e:
        from_keywords(Coin, heads=1, foo=2)
    assert "heads" in str(e.value) and "steps" in str(e.value) and "guide" in str(e.value)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"steps": 2.5}, ["'steps'", "--steps", "integer", "2.5"]),
        ({"steps": True}, ["'steps'", "integer"]),
        ({"heads": "six"}, ["'heads'", "--heads", "integer", "'six'"]),
        ({"lr": "fast"}, ["'lr'", "number"]),
        ({"prior_a": None}, ["'prior_a'", "None"]),
        ({"flips": 101}, ["'flips'", "string"]),
        ({"check_args": "yes"}, ["'check_args'", "--validate", "True or False"]),
        ({"estimator": "nope"}, ["'estimator'", "must be one of", "reparam"]),
        ({"plugin": "p.py"}, ["'plugin'", "list"]),
    ],
)
def test_bad_keyword_values_are_user_errors(kwargs, words):
    with pytest.raises(UserError) as e:
        from_keywords(Coin, **kwargs)
    for w in words:
        assert w in str(e.value)
    assert "model 'coin'" in str(e.value)


def test_choices_are_checked_for_keywords():
    with pytest.raises(UserError, match="must be one of mlp, lenet5"):
        from_keywords(REGISTRY["bnn"], arch="resnet")


def test_switch_flags_and_overrides():
    @dataclasses.dataclass
    class Opts:
        on: bool = dataclasses.field(default=True, metadata={"help": "x"})
        off: bool = False
        named: bool = dataclasses.field(default=False, metadata={"flag": "--yes"})
        hidden: int = dataclasses.field(default=1, metadata={"hidden": True})
        items: list[str] = dataclasses.field(default_factory=list)

    assert flags(Opts) == {
        "on": "--no-on",
        "off": "--off",
        "named": "--yes",
        "hidden": "--hidden",
        "items": "--items",
    }
    p = argparse.ArgumentParser()
    add_options(p, Opts, {"hidden": 5}, {"on": {"help": "other"}})
    assert vars(p.parse_args([])) == {
        "on": True,
        "off": False,
        "named": False,
        "hidden": 5,
        "items": [],
    }
    ns = p.parse_args(["--no-on", "--off", "--yes", "--hidden", "2", "--items", "a"])
    assert vars(ns) == {"on": False, "off": True, "named": True, "hidden": 2, "items": ["a"]}
    assert "other" in p.format_help() and "--hidden" not in p.format_help()


def test_a_plugin_may_still_declare_argparse_options():
    class Legacy(Workflow):
        name = "legacy"
        default_guide = "g"

        @classmethod
        def add_arguments(cls, parser):
            parser.add_argument("--knob", type=int, default=4)

    assert fit_parser(Legacy, "t").parse_args(["--knob", "5"]).knob == 5
    assert Legacy.option_defaults() == {"knob": 4}
    assert from_keywords(Legacy, knob=6, steps=3).model.knob == 6
    with pytest.raises(UserError, match="unknown option 'nob'"):
        from_keywords(Legacy, nob=1)
