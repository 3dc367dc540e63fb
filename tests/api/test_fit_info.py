"""``post.fit_info``: what the fit did, typed, the numbers of ``summary.json``, also after
``bayesdl.load``."""

from __future__ import annotations

import dataclasses
import json

import pyro
import pyro.distributions as dist
import torch

import bayesdl

Y = torch.tensor([0.3, -0.2, 1.1, 0.4, 0.9, 0.0, 0.5, 0.7])


def model(y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    with pyro.plate("data", len(Y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_vi_fit_info_is_summary_json_and_survives_load(tmp_path):
    post = bayesdl.fit(model, data={"y": Y}, steps=120, log_every=20, out=tmp_path / "r",
                       progress=False)  # fmt: skip
    info = post.fit_info
    assert isinstance(info, bayesdl.FitInfo)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert info.method == "vi" and info.steps == 120 == summary["steps"]
    facts = (
        "wall_seconds",
        "steps_per_second",
        "compiled",
        "device",
        "converged",
        "seed",
        "threads",
    )
    for name in facts:
        assert getattr(info, name) == summary[name], name
    assert info.compiled is False and info.device == "cpu" and info.steps_per_second > 0
    assert info.threads == 1  # a step of 8 data and 2 guide numbers
    assert bayesdl.load(tmp_path / "r").fit_info == info
    assert set(f.name for f in dataclasses.fields(info)) >= {"wall_seconds", "converged"}


def test_nuts_fit_info_counts_transitions(tmp_path):
    post = bayesdl.fit(model, data={"y": Y}, method="nuts", num_samples=40, warmup=30, chains=2,
                       out=tmp_path / "n", progress=False)  # fmt: skip
    info = post.fit_info
    assert info.method == "nuts" and info.steps == 2 * (30 + 40) and info.compiled is False
    assert info.steps_per_second == round(info.steps / info.wall_seconds, 2)
    assert bayesdl.load(tmp_path / "n").fit_info == info
