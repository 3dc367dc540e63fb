"""Prior predictive simulation for simulation-based calibration: ``theta~ ~ p(theta)``,
``y~ ~ p(y | theta~)`` from one run of the model with its observed sites left free
(:class:`pyro.poutine.uncondition`), at the inputs and shapes of the data given.

The arguments the model observes (``obs=y``, or ``obs=y[idx]`` with the plate's full index) are
found by value, as :func:`bayesdl.inference.predictive.observation_keys` finds them, and
replaced by the simulated values; every other argument (inputs, sizes) is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine

from bayesdl.inference.errors import UserError


def _trace(model: Callable, data: dict[str, Any]) -> poutine.Trace:
    """One run of ``model(**data)``, its ``pyro.param`` s in a store of their own."""
    with torch.no_grad(), pyro.get_param_store().scope(), poutine.block():
        return poutine.trace(model).get_trace(**data)


def _is_plate(site: dict) -> bool:
    return type(site["fn"]).__name__ == "_Subsample"


@dataclass
class Simulator:
    """Draws ``(theta~, y~)`` from the model at the inputs of ``data``: ``observed`` maps each
    observed site to the argument it observes, ``latent`` the continuous latent sites ranked
    (name -> shape)."""

    model: Callable
    data: dict[str, Any]
    observed: dict[str, str]
    latent: dict[str, torch.Size]
    notes: list[str]

    @classmethod
    def of(cls, model: Callable, data: dict[str, Any], where: str) -> Simulator:
        """Find the observed arguments and the latent sites in one run of the model; refuse a
        model whose data cannot be simulated, with the reason."""
        tr = _trace(model, data)
        observed, latent, notes = {}, {}, []
        for name, site in tr.nodes.items():
            if site["type"] != "sample" or site["infer"].get("_deterministic"):
                continue
            if _is_plate(site):
                sub = site["fn"].subsample_size
                if sub is not None and sub < site["fn"].size:
                    raise UserError(
                        f"{where}: plate {name!r} subsamples {sub} of {site['fn'].size}: SBC "
                        "simulates the whole data set; fit it without subsample_size (the "
                        "engine's --batch-size subsamples the data instead)"
                    )
                continue
            if site["is_observed"]:
                observed[name] = _argument_of(name, site, data, where)
            elif site["infer"].get("is_kl") or site["infer"].get("is_auxiliary"):
                continue
            elif site["fn"].support.is_discrete:
                notes.append(f"site {name!r} is discrete (summed out by the fit): not ranked")
            else:
                latent[name] = site["value"].shape
        if not latent:
            raise UserError(
                f"{where} has no continuous latent site: SBC ranks the prior's draws of the "
                "latent sites (pyro.sample without obs=) among the posterior's"
            )
        if not observed:
            raise UserError(
                f"{where} has no observed site (no pyro.sample with obs=): nothing to simulate"
            )
        return cls(model, dict(data), observed, latent, notes)

    def draw(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``theta~ ~ p(theta)`` (``{site: value}``) and the model's arguments with the
        observed ones replaced by ``y~ ~ p(y | theta~)``."""
        tr = _trace(poutine.uncondition(self.model), self.data)
        truth = {name: tr.nodes[name]["value"].detach() for name in self.latent}
        simulated = dict(self.data)
        for name, key in self.observed.items():
            old = self.data[key]
            simulated[key] = tr.nodes[name]["value"].detach().reshape(old.shape).to(old.dtype)
        return truth, simulated

    def check(self, simulated: dict[str, Any], where: str) -> None:
        """The model, given the simulated arguments, observes exactly the simulated values."""
        tr = _trace(self.model, simulated)
        for name, key in self.observed.items():
            value = tr.nodes[name]["value"]
            if not torch.equal(value.reshape(-1), simulated[key].reshape(-1).to(value.dtype)):
                raise UserError(
                    f"{where}: site {name!r} does not observe the argument {key!r} as a whole "
                    "(obs=y and obs=y[idx] do): SBC cannot replace its data"
                )


def _argument_of(name: str, site: dict, data: dict[str, Any], where: str) -> str:
    """The argument whose tensor the observed site ``name`` observes (``obs=y``,
    ``obs=y[idx]`` with the plate's full index)."""
    if type(site["fn"]).__name__ == "Unit":
        raise UserError(
            f"{where}: site {name!r} is a pyro.factor, which has no data to simulate; SBC needs "
            "every observation to be a pyro.sample(..., obs=) of a distribution"
        )
    value = site["value"]
    for key, v in data.items():
        if (
            torch.is_tensor(v)
            and torch.is_tensor(value)
            and v.numel() == value.numel()
            and v.dtype == value.dtype
            and torch.equal(v.reshape(-1), value.reshape(-1))
        ):
            return key
    raise UserError(
        f"{where}: observed site {name!r} observes none of the data's arguments as it is "
        "(obs=y or obs=y[idx] are found; a converted value, obs=y.float(), is not): pass the "
        "data in the dtype and shape the site observes"
    )


def replication_seeds(seed: int, r: int) -> tuple[int, int, int]:
    """Seeds of replication ``r`` 's simulation, posterior draws and tie breaks: independent
    streams of numpy's ``SeedSequence((seed, r))``, none the fit's own seed ``seed + r`` (a
    shared seed would draw the truth and the posterior from the same noise)."""
    sim, draw, ties = np.random.SeedSequence([seed, r]).generate_state(3)
    return int(sim), int(draw), int(ties)
